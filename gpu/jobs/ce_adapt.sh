#!/usr/bin/env bash
# Issue 19: the adaptation job's GPU part (python -m training adapt --phases dense,train) from the shipped reranker,
# on a collection whose queries/mine/dense phases ran here (CPU), with an eval bundle reported (never used to choose).
# Fits one call (about 35 MiB) with no MiniLM: the dense phase must be done here first.
#   python -m training adapt --dataset ../shared/data/cranfield --out runs/ce-adapted --phases queries,mine,dense
#   python -m training.dense.compact_weights pack --model models/ce-minilm --out .cache/ce-base-q8 && cp -r models/ce-minilm/2_Dense .cache/ce-base-q8/
#   MINILM=0 bash gpu/pack.sh .cache/ce-base-q8 .cache/adapt/cranfield .cache/ce/cranfield; bash gpu/tree.sh slim
#   device: EPOCHS=3 LR=3e-5 bash gpu/run.sh ce_adapt cranfield, carry [".gpu"]; then bash gpu/tree.sh restore
# Returns $OUT/adapt.json (the training report: pseudo dev before/after, the eval bundle for base and adapted), the raw
# scores for blend studies ($OUT/scores.tar.xz) and the adapted model (bf16, $OUT/model.tar.part-*).
set -uo pipefail
name=${1:?COLLECTION (the folder under .cache/adapt and .cache/ce)}
work=.cache/adapt/$name
[ -f "$work/bundle/train.json.gz" ] || { echo "missing: $work/bundle (run the queries, mine and dense phases here)" >&2; exit 3; }
[ -d .cache/ce-base-q8 ] || { echo "missing: .cache/ce-base-q8 (the shipped reranker's int8 pack)" >&2; exit 3; }
python3 -m training.dense.compact_weights unpack --packed .cache/ce-base-q8 --out "$GPU_WORK/shipped" > /dev/null \
  && cp -r .cache/ce-base-q8/2_Dense "$GPU_WORK/shipped/" || exit 3
mkdir -p "$GPU_WORK/scores"
evals=(); [ -f ".cache/ce/$name/eval-test.json.gz" ] && evals=(--extra-eval ".cache/ce/$name/eval-test.json.gz")
timeout "${ADAPT_S:-400}" python3 -m training adapt --work "$work" --base "$GPU_WORK/shipped" --out "$GPU_WORK/adapted" \
  --phases train --device cuda --epochs "${EPOCHS:-3}" --lr "${LR:-3e-5}" "${evals[@]}" --dump-scores "$GPU_WORK/scores" \
  --code-commit "${CODE_COMMIT:-unknown}" > "$OUT/adapt.log" 2>&1
rc=$?
tail -n 5 "$OUT/adapt.log"
cp "$GPU_WORK/adapted/training_report.json" "$OUT/adapt.json" 2>/dev/null
[ -d "$GPU_WORK/scores" ] && tar -cf - -C "$GPU_WORK/scores" . | xz -T8 > "$OUT/scores.tar.xz"
[ -d "$GPU_WORK/adapted" ] && tar -cf - -C "$GPU_WORK" adapted | split -b 15m - "$OUT/model.tar.part-"
ls -la "$OUT"
exit $rc
