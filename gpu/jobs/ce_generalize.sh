#!/usr/bin/env bash
# Issue 19, one call: rerankers trained on data beyond one collection, side by side (ablation of the pseudo-query
# sources and the hybrid teacher, and continued training of the shipped reranker), every run's raw scores dumped
# for the blend study, the shipped reranker evaluated beside them, and the adaptation job on Cranfield's corpus.
# Pack first (here; data preparation in results/2026-12-04-ce-generalize/README.md). Everything together is
# 73.4 MiB (measured 2026-12-04: bundles 27, the shipped reranker as int8 21, MiniLM 21, wheels 3, code 2.3),
# over the 64 MiB a call carries, so the shipped reranker is staged by one short call first (below); the job runs
# what its inputs allow and says what it skipped. Tried this way on 2026-12-04 (one keep call, then the job):
#   bash gpu/stage.sh ce-base .cache/ce-base-q8
#   bash gpu/pack.sh .cache/ce/{scifact,xquad-en,cranfield,manpages-titles,scifact-titles,debian-titles,scifact-sents,debian-sents} [.cache/adapt/cranfield/bundle]
#   export RUNS="titles+sents+teacher ship+all+teacher-r4" SHIP_LR=1e-5 NEG=15 ONLY_TRAIN=1 ONE_MODEL=1 TRAIN_S=330 STEPS=3000 DEADLINE_S=510
#   bash gpu/dryrun.sh ce_generalize      # here, always, before the device calls
#   bash gpu/tree.sh slim; device: "bash gpu/run.sh keep" carry [".gpu-stage/ce-base/1"], then at once
#   the same assignments followed by "bash gpu/run.sh ce_generalize" carry [".gpu"]; bash gpu/tree.sh restore
# That call (4th session of 2026-12-04): two runs of 3,000 steps in 234 s, every report in ~45 s, job 510 s, the
# dev-chosen model back as bf16 (three 15 MB parts). Pack with the pseudo bundles NOT densified: densified ones
# bring the call to 63.8 of 64 MiB; densify on the GPU takes ~50 s in parallel (on this CPU: ~8 min a corpus).
# RUNS="a b" picks the runs (default: all but ship+all); NEG=15 takes 15 negatives per group instead of 31 (half the
# pairs per step); SHIP_LR the learning rate of the ship+ runs (2e-5). Bundles already densified skip that step.
# ONLY_TRAIN=1 skips the shipped reranker's evaluation and the adaptation (their results are in
# results/2026-12-04-ce-generalize), SKIP_TITLES=1 the `titles` run, ONE_MODEL=1 returns only the best run by that dev-only mean, as it was measured (bf16 folder, ~45 MB, in 15 MB parts).
# How long the runs' evaluation takes on the GPU is not known yet: keep TRAIN_S low; DEADLINE_S returns what finished.
# Variants (each its own process, in parallel on the one GPU; "real" = SciFact train + XQuAD-R en training articles):
#   titles               real (x4) + SciFact and Debian title pseudo-queries, from the packaged MiniLM
#   titles+sents         the same + SciFact and Debian sentence (inverse-cloze) pseudo-queries
#   titles+sents+teacher the same + KL towards the zero-shot hybrid
#   ship+all             the shipped reranker trained further on real (x2) + all pseudo-queries, lr 2e-5
#   ship+all+teacher     the same + teacher
#   ship+all+teacher-r4  the same with the human labels counted 4x (how much in-domain weight keeps SciFact)
#   ship+all+gen+self-0.3  ship+all+self-0.3 plus the SmolLM2 questions of SciFact's and Debian's corpora
#   ship+all+gen+teacher   the same data with the hybrid teacher instead of the shipped model
#   ship+all+self        ship+all anchored to the shipped reranker itself (KL to its scores on every group, weight 1:
#                        self-distillation, so new domains are learnt without forgetting SciFact); -0.3: weight 0.3
# Never trained on or used for a choice: Cranfield (reported); the manual pages are a held-out domain (dev for choices).
set -uo pipefail
TRAIN_S=${TRAIN_S:-300}     # seconds of stepping per run (then evaluation and saving): the call has 600 s in all
STEPS=${STEPS:-1500}
CE=.cache/ce
R=${RES:-$GPU_WORK/res}; mkdir -p "$R/scores"
# A deadline inside the call: at DEADLINE_S seconds whatever $R holds goes to $OUT (results-partial.tar.xz.part-*; here: cat the parts | tar -xJf -) and the
# job's runs are stopped, so a slow evaluation can no longer cost the whole call (2026-12-04: a call ran out its
# 600 s and returned nothing; the next was stopped from outside and returned an empty archive).
DEADLINE_S=${DEADLINE_S:-520}
( sleep "$DEADLINE_S"; echo "deadline of ${DEADLINE_S}s: partial results to \$OUT, runs stopped"
  touch "$GPU_WORK/past-deadline"   # the job's own steps after the runs check it and stop (a call ran out its 600 s)
  tar -cf - -C "$R" . | xz -T8 | split -b 15m - "$OUT/results-partial.tar.xz.part-"; pkill -TERM -f "m training (cross-encoder|adapt)"; pkill -TERM -P $$ ) &  # never put that pattern in the device command line: it would stop the command itself
watchdog=$!; disown "$watchdog"  # out of the job table: the `wait`s below must not wait for it
SHIPPED=""
# the shipped reranker (int8 pack, 21 MiB) comes packed, or staged by one earlier call to the warm machine:
#   python3 -m training.dense.compact_weights pack --model models/ce-minilm --out .cache/ce-base-q8 && cp -r models/ce-minilm/2_Dense .cache/ce-base-q8/
#   bash gpu/stage.sh ce-base .cache/ce-base-q8; device: bash gpu/run.sh keep, carry [".gpu-stage/ce-base/1"]; then pack + this job
if [ ! -d .cache/ce-base-q8 ] && [ -f .gpu/stage/ce-base.manifest ]; then
  mkdir -p .cache && bash gpu/need.sh ce-base .cache || echo "the staged shipped reranker is missing (above)"
fi
if [ -d .cache/ce-base-q8 ]; then
  python3 -m training.dense.compact_weights unpack --packed .cache/ce-base-q8 --out "$GPU_WORK/shipped" > /dev/null \
    && cp -r .cache/ce-base-q8/2_Dense "$GPU_WORK/shipped/" && SHIPPED=$GPU_WORK/shipped
fi
[ -n "$SHIPPED" ] || echo "SKIPPED: the shipped reranker's runs (continued training, adaptation, its evaluation): .cache/ce-base-q8 not packed"
for b in scifact xquad-en cranfield manpages-titles scifact-titles debian-titles scifact-sents debian-sents \
         scifact-gen debian-gen; do
  [ -d $CE/$b ] || { echo "MISSING: $CE/$b (pack it)"; continue; }
  timeout 200 python3 -m training cross-encoder densify --bundle $CE/$b --model "$MINILM" --device cuda > "$R/densify-$b.log" 2>&1 &
done
wait
echo "densify done at ${SECONDS}s"
common=(--extra-eval $CE/cranfield/eval-test.json.gz $CE/manpages-titles/eval-train.json.gz --base-model "$MINILM"
        --code-commit "${CODE_COMMIT:-unknown}")
real=($CE/scifact $CE/xquad-en)
titles=($CE/scifact-titles $CE/debian-titles)
sents=($CE/scifact-sents $CE/debian-sents)
gen=($CE/scifact-gen $CE/debian-gen)   # SmolLM2 questions, round-trip filtered (gpu/jobs/generate_queries.sh)
train() {  # name, then the training arguments (--variants ... included); MAXS: seconds of stepping (default TRAIN_S)
  local name=$1; shift
  timeout $((TRAIN_S + 240)) python3 -m training cross-encoder train --out "$GPU_WORK/ce/$name" --max-seconds "${MAXS:-$TRAIN_S}" \
    --dump-scores "$GPU_WORK/dump-$name" "${common[@]}" --epochs 1 --max-steps "$STEPS" "${neg[@]}" "$@" > "$R/$name.log" 2>&1
  cp "$GPU_WORK/ce/$name/training_report.json" "$R/$name.json" 2>/dev/null
  for f in "$GPU_WORK/dump-$name"/*--*.json; do [ -e "$f" ] && mv "$f" "$R/scores/$name--${f##*--}"; done
}
adapt() {  # issue 19's adaptation job on Cranfield's corpus alone, from the shipped reranker
  python3 -m training adapt --work .cache/adapt/cranfield --base "$GPU_WORK/shipped" \
    --out "$GPU_WORK/adapted" --phases dense,train --device cuda --dense-model "$MINILM" --epochs 3 --lr 3e-5 \
    --extra-eval $CE/cranfield/eval-test.json.gz --dump-scores "$R/scores-adapt" --code-commit "${CODE_COMMIT:-unknown}" \
    > "$R/adapt.log" 2>&1
  cp "$GPU_WORK/adapted/training_report.json" "$R/adapt.json" 2>/dev/null
}
shipped() {  # the shipped reranker on the same bundles (every alpha, both first stages)
  python3 -m training cross-encoder interpolate --model "$GPU_WORK/shipped" --bundle "${real[@]}" --device cuda \
    --extra-eval $CE/cranfield/eval-test.json.gz $CE/manpages-titles/eval-train.json.gz --out "$R/shipped-interpolation.json" \
    > "$R/shipped.log" 2>&1
}
if [ -n "$SHIPPED" ] && [ -z "${ONLY_TRAIN:-}" ]; then   # ONLY_TRAIN=1: the training runs alone
  shipped &
  if [ -d .cache/adapt/cranfield/bundle ]; then adapt & else echo "SKIPPED: adaptation (.cache/adapt/cranfield/bundle not packed)"; fi
fi
# RUNS: which variants run (side by side on the one GPU: fewer runs, more steps each); NEG: negatives per group
RUNS=${RUNS:-titles titles+sents titles+sents+teacher ship+all+teacher ship+all+teacher-r4}
[ -n "${SKIP_TITLES:-}" ] && RUNS=$(echo " $RUNS " | sed 's/ titles / /')
neg=(); [ -n "${NEG:-}" ] && neg=(--negatives "$NEG")
SHIP_LR=${SHIP_LR:-2e-5}  # learning rate of the runs that continue from the shipped reranker
have() { for b in "$@"; do [ -d "$b" ] || { echo "SKIPPED: needs $b"; return 1; }; done; }
variant() {  # NAME: one run of the ablation (see the list at the top)
  local plain=listwise+curriculum+dense-negs teach=listwise+curriculum+dense-negs+teacher
  local all=("${real[@]}" "${titles[@]}" "${sents[@]}")
  case "$1" in
    titles) have "${real[@]}" "${titles[@]}" && train titles --variants $plain --bundle "${real[@]}" "${titles[@]}" --repeat 4 4 1 1 ;;
    titles+sents) have "${all[@]}" && train titles+sents --variants $plain --bundle "${all[@]}" --repeat 4 4 1 1 1 1 ;;
    titles+sents+teacher) have "${all[@]}" && train titles+sents+teacher --variants $teach --bundle "${all[@]}" --repeat 4 4 1 1 1 1 ;;
    ship+all) [ -n "$SHIPPED" ] && have "${all[@]}" && train ship+all --variants $plain --init-model "$SHIPPED" --lr "$SHIP_LR" \
      --bundle "${all[@]}" --repeat 2 2 1 1 1 1 ;;
    ship+all+teacher) [ -n "$SHIPPED" ] && have "${all[@]}" && train ship+all+teacher --variants $teach --init-model "$SHIPPED" \
      --lr "$SHIP_LR" --bundle "${all[@]}" --repeat 2 2 1 1 1 1 ;;
    ship+all+teacher-r4) [ -n "$SHIPPED" ] && have "${all[@]}" && train ship+all+teacher-r4 --variants $teach --init-model "$SHIPPED" \
      --lr "$SHIP_LR" --bundle "${all[@]}" --repeat 4 4 1 1 1 1 ;;
    ship+all+self) [ -n "$SHIPPED" ] && have "${all[@]}" && train ship+all+self --variants $plain --init-model "$SHIPPED" \
      --lr "$SHIP_LR" --bundle "${all[@]}" --repeat 2 2 1 1 1 1 --teacher model --teacher-model "$SHIPPED" --distill-weight 1 ;;
    ship+all+self-0.3) [ -n "$SHIPPED" ] && have "${all[@]}" && train ship+all+self-0.3 --variants $plain --init-model "$SHIPPED" \
      --lr "$SHIP_LR" --bundle "${all[@]}" --repeat 2 2 1 1 1 1 --teacher model --teacher-model "$SHIPPED" --distill-weight 0.3 ;;
    ship+all+gen+self-0.3) [ -n "$SHIPPED" ] && have "${all[@]}" "${gen[@]}" && train ship+all+gen+self-0.3 --variants $plain \
      --init-model "$SHIPPED" --lr "$SHIP_LR" --bundle "${all[@]}" "${gen[@]}" --repeat 2 2 1 1 1 1 1 1 \
      --teacher model --teacher-model "$SHIPPED" --distill-weight 0.3 ;;
    ship+all+gen+teacher) [ -n "$SHIPPED" ] && have "${all[@]}" "${gen[@]}" && train ship+all+gen+teacher --variants $teach \
      --init-model "$SHIPPED" --lr "$SHIP_LR" --bundle "${all[@]}" "${gen[@]}" --repeat 2 2 1 1 1 1 1 1 ;;
    *) echo "unknown run $1 (RUNS)" ;;
  esac
}
for name in $RUNS; do variant "$name" & sleep 2; done
wait
echo "training done at ${SECONDS}s"
# SOUPS="name=a,b[@wa:wb] ...": weight averages of runs continued from the shipped reranker (model soups, WiSE-FT;
# "shipped" names the starting model), each evaluated like a run (a training run of no steps from the soup)
soup_run() {
  local spec=$1 name parts models=() weights=() m
  name=${spec%%=*}; parts=${spec#*=}
  for m in $(echo "${parts%%@*}" | tr ',' ' '); do
    if [ "$m" = shipped ]; then models+=("$SHIPPED"); else models+=("$GPU_WORK/ce/$m"); fi
  done
  case "$parts" in *@*) weights=(--weights $(echo "${parts#*@}" | tr ':' ' ')) ;; esac
  python3 -m training cross-encoder soup --models "${models[@]}" "${weights[@]}" --out "$GPU_WORK/soup/$name" \
    > "$R/soup-$name.log" 2>&1 || { echo "soup $name failed (soup-$name.log)"; return; }
  MAXS=1e-9 train "$name" --variants listwise+curriculum+dense-negs --init-model "$GPU_WORK/soup/$name" \
    --bundle "${real[@]}" "${titles[@]}" "${sents[@]}"
}
if [ -n "${SOUPS:-}" ] && [ -n "$SHIPPED" ]; then
  for spec in $SOUPS; do soup_run "$spec" & sleep 1; done
  wait
  echo "soups done at ${SECONDS}s"
fi
grep -h -E "model: |time budget|Error|error|Traceback" "$R"/*.log | cut -c1-300
if [ -e "$GPU_WORK/past-deadline" ]; then echo "past the deadline: the partial results are in \$OUT"; exit 0; fi
python3 -m training cross-encoder blend --dumps "$R/scores" --out "$R/blend.json" | grep -E " bm25 | zhybrid " | cut -c1-160
# the dev-only choice: mean nDCG@10 of the reranker alone over BM25's top-100 on SciFact dev, XQuAD-R dev and the
# never-trained-on manual pages; the best two come back as int8 packs (about 23 MB each; $OUT takes 64 MB)
python3 - "$R/blend.json" > "$R/chosen.txt" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
keys = ("dev:scifact", "dev:xquad-r-en", "manpages-titles")
score = {v: sum(t[v][k]["bm25"]["1.0"] for k in keys) / 3 for v in t if all(k in t[v] for k in keys)}
for v, s in sorted(score.items(), key=lambda kv: -kv[1]):
    print(v, f"{s:.4f}")
PY
cat "$R/chosen.txt"
picks() {  # ONE_MODEL: the best run by the dev-only mean; else the best continued run and the best other one
  if [ ! -s "$R/chosen.txt" ]; then ls "$GPU_WORK/ce" 2>/dev/null | head -1  # no dev means (a run cut short): any saved one
  elif [ -n "${ONE_MODEL:-}" ]; then grep -v adapt "$R/chosen.txt" | head -1
  else grep -v adapt "$R/chosen.txt" | grep '^ship+' | head -1; grep -v adapt "$R/chosen.txt" | grep -v '^ship' | head -1; fi
}
for name in $(picks | cut -d' ' -f1); do
  m=$GPU_WORK/ce/$name
  if [ -n "${ONE_MODEL:-}" ]; then mkdir -p "$GPU_WORK/ret" && cp -r "$m" "$GPU_WORK/ret/$name"  # as measured (bf16, ~45 MB)
  else python3 -m training.dense.compact_weights pack --model "$m" --out "$GPU_WORK/ret/$name" > /dev/null \
    && cp -r "$m/2_Dense" "$m/training_report.json" "$m/MODEL_CARD.md" "$GPU_WORK/ret/$name/"; fi
done
mkdir -p "$GPU_WORK/ret"; tar -cf - -C "$GPU_WORK/ret" . | split -b 15m - "$OUT/models.tar.part-"
# split: a file over 16 MiB does not come back from a call (2026-12-04: a 19 MB archive was left out)
tar -cf - -C "$R" . | xz -T8 | split -b 15m - "$OUT/results.tar.xz.part-"
ls -la "$OUT"
kill "$watchdog" 2>/dev/null
