#!/usr/bin/env bash
# One GPU-machine call: the cross-encoder throughput benchmark (issue 10, alone on the GPU),
# then side by side: every language module trained and evaluated (issue 4) and the rest of the
# dense suite (issue 5: separate models for the MoE comparison, Mamba distilled, Mamba fine-tuned).
#
# Carried (git-ignored): .device/{whl,minilm-q8,data} as for gpu_dense_and_ce_ablation.sh,
# .carry-lang/{ce-minilm (model.safetensors.xz), xquad-r (xz'd), candidates.json},
# .cache/ce/scifact/eval-test.json.gz.
# Usage: OUT=<dir> bash training/gpu_lang_mamba_ce_bench.sh [seconds for the parallel part]
set -uo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
PAR_S=${1:-330}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
python3 -m training.dense.compact_weights unpack --packed .device/minilm-q8 --out /tmp/minilm || exit 4
python3 -m training.dense.compact_weights unpack-tree --src .device/data --out /tmp/data || exit 5
python3 -m training.dense.compact_weights unpack-tree --src .carry-lang --out /tmp/lang || exit 6
mkdir -p models && rm -rf models/ce-minilm && cp -r /tmp/lang/ce-minilm models/ce-minilm
sha256sum models/ce-minilm/model.safetensors
SECONDS=0
timeout 150 python3 -m benchmarks.ce_throughput --device cuda --model models/ce-minilm \
  --bundle .cache/ce/scifact/eval-test.json.gz --json-out "$OUT/bench_ce_gpu.json" 2>&1 | grep -v -E "Loading weights|Batches" | tail -8
echo "ce bench done at ${SECONDS}s"
mkdir -p /tmp/langout /tmp/res
timeout "$PAR_S" python3 -m training.language_modules.job --data /tmp/lang/xquad-r --candidates /tmp/lang/candidates.json \
  --out /tmp/langout > "$OUT/lang.log" 2>&1 &
timeout "$PAR_S" python3 -m training.dense.suite --data-dir /tmp/data --base /tmp/minilm --work /tmp/work --out /tmp/res/dense \
  --only separate mamba-distill mamba-ft > /tmp/res/suite.log 2>&1 &
wait
echo "parallel part done at ${SECONDS}s"
grep -E "done:|nDCG" "$OUT/lang.log" | tail -5
grep -v -E "Loading|Batches|MISSING|LOAD REPORT|^Key|^---|^Notes|pooler|^\s*$" /tmp/res/suite.log | tail -8
cp /tmp/langout/*.tar /tmp/langout/rerank.json "$OUT/" 2>/dev/null
tar -cf - -C /tmp/res . | xz -T8 -6 > "$OUT/dense.tar.xz"
ls -la "$OUT"
