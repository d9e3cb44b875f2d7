#!/usr/bin/env bash
# Issue 23 (GPU): the padding-free (packed) cross-encoder path against the padded one, in one run
# (benchmarks.ce_packed): forward and end-to-end pairs/s of padded compiled (today's configuration, the
# baseline), padded with a warm passage ids cache, packed compiled, packed with the warm cache, packed eager;
# per query top-10 against the padded path's, max |score diff|, nDCG@10. SciFact test pairs (BM25 top-100).
# Pack (here): MINILM=0 bash gpu/pack.sh models/ce-minilm .cache/ce/scifact/eval-test.json.gz && bash gpu/tree.sh slim
#   (the bundle: python -m indexer build --dataset ../shared/data/scifact --index lucene
#    then python -m training cross-encoder mine --dataset ../shared/data/scifact --out .cache/ce/scifact)
# Env: MODEL (models/ce-minilm), BENCH_S (360), ARGS (more benchmark flags, e.g. "--variants packed packed-fp16
#   reference-fp32 --profile 4096": names with - for spaces), ATTENTION=1 (time the attention kernels alone first:
#   benchmarks.attention_kernels, $OUT/attention.json)
# $OUT: packed.json (every row, rankings, nDCG@10), versions.txt
set -uo pipefail
MODEL=${MODEL:-models/ce-minilm}
# the shipped reranker may come staged as its int8 pack instead (gpu/stage.sh ce-base .cache/ce-base-q8, as ce_generalize)
if [ ! -e "$MODEL/model.safetensors" ] && [ -d .cache/ce-base-q8 ]; then
  python3 -m training.dense.compact_weights unpack --packed .cache/ce-base-q8 --out "$GPU_WORK/ce-q8" > /dev/null \
    && cp -r .cache/ce-base-q8/2_Dense "$GPU_WORK/ce-q8/" && MODEL=$GPU_WORK/ce-q8 && echo "model: the shipped reranker from its int8 pack"
fi
lost=(); for p in "$MODEL/model.safetensors" .cache/ce/scifact/eval-test.json.gz; do [ -e "$p" ] || lost+=("$p"); done
[ ${#lost[@]} -eq 0 ] || { echo "missing ${lost[*]} (pack: MINILM=0 bash gpu/pack.sh $MODEL .cache/ce/scifact/eval-test.json.gz)" >&2; exit 3; }
python3 -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)" | tee "$OUT/versions.txt"
echo "code commit $CODE_COMMIT" >> "$OUT/versions.txt"
if [ "${ATTENTION:-0}" = 1 ]; then  # the attention kernels alone first (benchmarks.attention_kernels), 120 s at most
  timeout 120 python3 -m benchmarks.attention_kernels --device cuda --model "$MODEL" --bundle .cache/ce/scifact/eval-test.json.gz \
    --json-out "$OUT/attention.json" 2>&1 | grep -v -E "Loading weights|^ |Warning|warn"
fi
# shellcheck disable=SC2086
timeout "${BENCH_S:-360}" python3 -m benchmarks.ce_packed --device cuda --model "$MODEL" \
  --bundle .cache/ce/scifact/eval-test.json.gz --json-out "$OUT/packed.json" ${ARGS:-} 2>&1 \
  | grep -v -E "Loading weights|Batches|^ |^[{}]$"
