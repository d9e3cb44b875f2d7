#!/usr/bin/env bash
# The cross-encoder's GPU job, as run on the lent GPU machine (one call): dense lists, the
# ablation (every variant, best by dev saved), and the GPU throughput benchmark.
# Needs (carried, git-ignored): .cache/ce/scifact/*.json.gz (from `cross-encoder mine`),
# .cache/ce/base-minilm (the packaged MiniLM folder, weights in bf16 to fit the transfer),
# .cache/ce/whl (pydantic/pyyaml wheels, installed only if the image lacks them).
# Usage: OUT=/some/dir CODE_COMMIT=<sha> bash training/cross_encoder/gpu_run.sh [train-seconds] [bench-seconds]
# $OUT gets ce-minilm.tar.part-* (cat them | tar x), report.json, train.log, bench_gpu.json.
set -uo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
PY=${PY:-python3}
TRAIN_S=${1:-300}
BENCH_S=${2:-110}
$PY -c 'import torch, transformers, sentence_transformers as st; print("torch", torch.__version__, torch.cuda.get_device_name(0), "transformers", transformers.__version__, "st", st.__version__)'
if ! $PY -c 'import pydantic, yaml' 2>/dev/null; then
  echo "installing carried pydantic/pyyaml wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .cache/ce/whl/*.whl && export PYTHONPATH=/tmp/site
fi
timeout 120 $PY -m training cross-encoder densify --bundle .cache/ce/scifact --model .cache/ce/base-minilm --device cuda 2>&1 | grep -v -E "Batches|Loading weights" | tail -3
timeout "$TRAIN_S" $PY -m training cross-encoder train --bundle .cache/ce/scifact --out /tmp/ce-minilm \
  --base-model .cache/ce/base-minilm --variants "${VARIANTS:-all}" --code-commit "${CODE_COMMIT:-unknown}" 2>&1 \
  | grep -v -E "Loading weights|Batches|Writing model" | tee "$OUT/train.log" | grep -E "dev nDCG|: dev|step 100/|rror|^\|" | tail -40
cp /tmp/ce-minilm/training_report.json "$OUT/report.json" 2>/dev/null
if [ -f /tmp/ce-minilm/2_Dense/model.safetensors ]; then
  (cd /tmp && tar cf - ce-minilm | split -b 15m - "$OUT/ce-minilm.tar.part-")
  timeout "$BENCH_S" $PY -m benchmarks.ce_throughput --device cuda --model /tmp/ce-minilm --bundle .cache/ce/scifact/eval-test.json.gz \
    --json-out "$OUT/bench_gpu.json" 2>&1 | grep -v -E "Loading weights|Batches" | tail -45
fi
ls -la "$OUT"
