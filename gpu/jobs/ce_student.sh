#!/usr/bin/env bash
# Issue 23, one call: the shipped reranker distilled into shallower students (its own layers, evenly spaced, the
# last kept; `train --student-layers N --teacher model`), side by side on the one GPU, each reported on the same
# bundles as the teacher (SciFact dev/test, XQuAD-R en dev, Cranfield, the manual pages), every raw score dumped
# for the blend study, then (BENCH=1) the GPU throughput of the teacher and of the students, same pairs, same run.
# The teacher is staged (as ce_generalize): 
#   python -m training.dense.compact_weights pack --model models/ce-minilm --out .cache/ce-base-q8 && cp -r models/ce-minilm/2_Dense .cache/ce-base-q8/
#   bash gpu/stage.sh ce-base .cache/ce-base-q8
#   bash gpu/pack.sh .cache/ce/{scifact,xquad-en,cranfield,manpages-titles,scifact-titles,debian-titles,scifact-sents,debian-sents}
#   bash gpu/dryrun.sh ce_student; bash gpu/tree.sh slim
#   device: "bash gpu/run.sh keep" carry [".gpu-stage/ce-base/1"], then at once "bash gpu/run.sh ce_student" carry [".gpu"]
#   bash gpu/tree.sh restore
# Data: the teacher's own training data (SciFact train, XQuAD-R en training articles, each counted twice) plus the
# pseudo-queries of issue 19 (SciFact and Debian titles and sentences); no test query is read for training or choice.
# Env: STUDENTS ("NAME:LAYERS:LABEL_WEIGHT:DISTILL_WEIGHT ..."), TRAIN_S (s of stepping per run), STEPS, NEG,
# DEADLINE_S (what $R holds goes to $OUT then), BENCH=1 (throughput after training; BENCH_MODELS "teacher s3 s2"), LR.
# $OUT: results.tar.xz.part-* (reports, logs, dumps, blend.json; 19 MB on 2026-12-04), models.tar.part-* (each
# student as an int8 pack + head). Measured: 4 students x 240 s + reports + the teacher's bench filled 530 s
# (results/2026-12-04-ce-student); benchmark the students in a call of their own (BENCH_MODELS) to keep it clean.
set -uo pipefail
TRAIN_S=${TRAIN_S:-300}
STEPS=${STEPS:-6000}
LR=${LR:-1e-4}
STUDENTS=${STUDENTS:-s3:3:1:1 s2:2:1:1 s2-kd:2:0:1 s1:1:1:1}
CE=.cache/ce
R=${RES:-$GPU_WORK/res}; mkdir -p "$R/scores"
DEADLINE_S=${DEADLINE_S:-520}
( sleep "$DEADLINE_S"; echo "deadline of ${DEADLINE_S}s: partial results to \$OUT, runs stopped"
  tar -cf - -C "$R" . | xz -T8 > "$OUT/results-partial.tar.xz"; pkill -TERM -f "m (training cross-encoder|benchmarks.ce_packed)"; pkill -TERM -P $$ ) &  # never put that pattern in the device command line
watchdog=$!; disown "$watchdog"
if [ ! -d .cache/ce-base-q8 ] && [ -f .gpu/stage/ce-base.manifest ]; then
  mkdir -p .cache && bash gpu/need.sh ce-base .cache || echo "the staged shipped reranker is missing (above)"
fi
[ -d .cache/ce-base-q8 ] || { echo "no teacher: .cache/ce-base-q8 neither packed nor staged" >&2; exit 3; }
python3 -m training.dense.compact_weights unpack --packed .cache/ce-base-q8 --out "$GPU_WORK/teacher" > /dev/null \
  && cp -r .cache/ce-base-q8/2_Dense "$GPU_WORK/teacher/" || exit 3
TEACHER=$GPU_WORK/teacher
bundles=(scifact xquad-en scifact-titles scifact-sents debian-titles debian-sents)
for b in "${bundles[@]}" cranfield manpages-titles; do
  [ -d $CE/$b ] || { echo "MISSING: $CE/$b (pack it)" >&2; exit 3; }
  timeout 200 python3 -m training cross-encoder densify --bundle $CE/$b --model "$MINILM" --device cuda > "$R/densify-$b.log" 2>&1 &
done
wait
echo "densify done at ${SECONDS}s"
evals=(--extra-eval $CE/cranfield/eval-test.json.gz $CE/manpages-titles/eval-train.json.gz)
# the teacher on the same bundles, every alpha (the baseline of every student row)
python3 -m training cross-encoder interpolate --model "$TEACHER" --bundle $CE/scifact $CE/xquad-en --device cuda \
  "${evals[@]}" --out "$R/teacher-interpolation.json" > "$R/teacher.log" 2>&1 &
student() {  # NAME LAYERS LABEL_WEIGHT DISTILL_WEIGHT
  local name=$1
  timeout $((TRAIN_S + 200)) python3 -m training cross-encoder train --out "$GPU_WORK/ce/$name" --init-model "$TEACHER" \
    --student-layers "$2" --teacher model --teacher-model "$TEACHER" --label-weight "$3" --distill-weight "$4" \
    --variants listwise+curriculum+dense-negs --bundle "${bundles[@]/#/$CE/}" --repeat 2 2 1 1 1 1 \
    --negatives "${NEG:-15}" --epochs 3 --max-steps "$STEPS" --max-seconds "$TRAIN_S" --lr "$LR" \
    "${evals[@]}" --dump-scores "$GPU_WORK/dump-$name" --code-commit "${CODE_COMMIT:-unknown}" > "$R/$name.log" 2>&1
  cp "$GPU_WORK/ce/$name/training_report.json" "$R/$name.json" 2>/dev/null
  for f in "$GPU_WORK/dump-$name"/*--*.json; do [ -e "$f" ] && mv "$f" "$R/scores/$name--${f##*--}"; done
}
for s in $STUDENTS; do IFS=: read -r name layers lw dw <<< "$s"; student "$name" "$layers" "$lw" "$dw" & sleep 1; done
wait
echo "training done at ${SECONDS}s"
grep -h -E "student: |model: |time budget|Error|error|Traceback" "$R"/*.log | cut -c1-300
python3 -m training cross-encoder blend --dumps "$R/scores" --out "$R/blend.json" | grep -E " zhybrid " | cut -c1-160
python3 - "$R/teacher-interpolation.json" <<'PY' 2>/dev/null | head -20
import json, sys
print(json.dumps(json.load(open(sys.argv[1])), indent=None)[:1500])
PY
for s in $STUDENTS; do
  name=${s%%:*}; m=$GPU_WORK/ce/$name
  [ -f "$m/training_report.json" ] || continue
  python3 -m training.dense.compact_weights pack --model "$m" --out "$GPU_WORK/ret/$name" > /dev/null \
    && cp -r "$m/2_Dense" "$m/training_report.json" "$m/MODEL_CARD.md" "$GPU_WORK/ret/$name/"
done
if [ -n "${BENCH:-}" ]; then  # forward and end-to-end pairs/s, padded (+ passage cache) and packed, same pairs
  for tag in ${BENCH_MODELS:-teacher s3 s2}; do
    m=$GPU_WORK/ce/$tag; [ "$tag" = teacher ] && m=$TEACHER
    [ -f "$m/config.json" ] || continue
    timeout 120 python3 -m benchmarks.ce_packed --device cuda --model "$m" --bundle $CE/scifact/eval-test.json.gz \
      --repeats 2 --variants padded --json-out "$R/bench-$tag.json" 2>&1 | grep -E "pairs/s|padded|packed" | sed "s/^/$tag: /" | cut -c1-200
  done
fi
mkdir -p "$GPU_WORK/ret"; tar -cf - -C "$GPU_WORK/ret" . | split -b 15m - "$OUT/models.tar.part-"
tar -cf - -C "$R" . | xz -T8 | split -b 15m - "$OUT/results.tar.xz.part-"  # one file may bring back 16 MiB
ls -la "$OUT"
kill "$watchdog" 2>/dev/null
