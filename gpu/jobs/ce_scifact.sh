#!/usr/bin/env bash
# The SciFact cross-encoder recipe in one call (was training/cross_encoder/gpu_run.sh, which made
# models/ce-minilm-scifact, and training/gpu_ce_profile_and_ablation.sh): dense lists for the bundle, the
# ablation (variants in one process, the best by dev nDCG@10 saved; or SIDE_BY_SIDE=1: one process per
# variant, in parallel, each saved), then the end-to-end GPU throughput of the saved model.
# Pack (here): bash gpu/pack.sh .cache/ce/scifact   (the bundle: python -m training cross-encoder mine)
# Env: VARIANTS (default all), TRAIN_S (300), BENCH_S (110; 0: no benchmark), PROFILE=1 (where the GPU time goes)
# $OUT: ce-minilm.tar.part-* (cat them | tar x), report.json, train.log.xz, bench_gpu.json
set -uo pipefail
[ -n "${MINILM:-}" ] || { echo "this job needs MiniLM: pack without MINILM=0" >&2; exit 3; }
[ -f .cache/ce/scifact/train.json.gz ] || { echo "missing .cache/ce/scifact (pack it: bash gpu/pack.sh .cache/ce/scifact)" >&2; exit 3; }
TRAIN_S=${TRAIN_S:-300}
BENCH_S=${BENCH_S:-110}
VARIANTS=${VARIANTS:-all}
R=$GPU_WORK/res; mkdir -p "$R"
timeout 120 python3 -m training cross-encoder densify --bundle .cache/ce/scifact --model "$MINILM" --device cuda 2>&1 | tail -2
echo "densify done at ${SECONDS}s"
train() {  # name, variants
  timeout "$TRAIN_S" python3 -m training cross-encoder train --bundle .cache/ce/scifact --out "$GPU_WORK/ce/$1" \
    --base-model "$MINILM" --variants "$2" --code-commit "$CODE_COMMIT" > "$R/$1.log" 2>&1
  cp "$GPU_WORK/ce/$1/training_report.json" "$R/$1.json" 2>/dev/null || echo "$1: no training_report.json (cut by TRAIN_S=$TRAIN_S?)"
}
if [ "${SIDE_BY_SIDE:-0}" = 1 ]; then
  [ "$VARIANTS" != all ] || VARIANTS=$(python3 -c 'from training.cross_encoder.ablation import VARIANTS; print(",".join(VARIANTS))')
  for v in ${VARIANTS//,/ }; do train "$v" "$v" & done
  wait
  best=$(python3 - "$R" <<'PY'
import json, sys
from pathlib import Path
rows = {p.stem: json.loads(p.read_text())["chosen"]["dev_ndcg10"] for p in Path(sys.argv[1]).glob("*.json")}
print(max(rows, key=rows.get) if rows else "")
PY
)
else
  train ce-minilm "$VARIANTS"; best=ce-minilm
fi
echo "training done at ${SECONDS}s; saved model: ${best:-none}"
grep -h -E "variant .*: dev|dev nDCG" "$R"/*.log | cut -c1-300 | tail -20
[ -n "$best" ] && [ -f "$GPU_WORK/ce/$best/2_Dense/model.safetensors" ] || { echo "no model finished" >&2; tar -cf - -C "$R" . | xz > "$OUT/results.tar.xz"; exit 6; }
cp "$R/$best.json" "$OUT/report.json"
(cd "$GPU_WORK/ce" && tar cf - "$best" | split -b 15m - "$OUT/ce-minilm.tar.part-")
if [ "$BENCH_S" != 0 ]; then
  timeout "$BENCH_S" python3 -m benchmarks.ce_throughput --device cuda ${PROFILE:+--profile} --model "$GPU_WORK/ce/$best" \
    --bundle .cache/ce/scifact/eval-test.json.gz --json-out "$OUT/bench_gpu.json" 2>&1 | grep -v -E "Loading weights|Batches" | tail -30
fi
cat "$R"/*.log | xz > "$OUT/train.log.xz"
ls -la "$OUT"
