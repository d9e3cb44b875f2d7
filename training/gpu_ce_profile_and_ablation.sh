#!/usr/bin/env bash
# One GPU-machine call (issue 10): where the cross-encoder's GPU time goes
# (`benchmarks.ce_throughput --profile`, alone on the GPU), then the ablation variants that still
# lack test numbers, side by side. Carried: .device/{whl,minilm-q8}, .carry-lang/ce-minilm,
# .cache/ce/scifact (train + eval-test bundles).
# Usage: OUT=<dir> CODE_COMMIT=<sha> bash training/gpu_ce_profile_and_ablation.sh [train seconds]
set -uo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
TRAIN_S=${1:-360}
VARIANTS=${VARIANTS:-"listwise pointwise+curriculum pointwise"}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
python3 -m training.dense.compact_weights unpack --packed .device/minilm-q8 --out /tmp/minilm || exit 4
python3 -m training.dense.compact_weights unpack-tree --src .carry-lang/ce-minilm --out /tmp/ce-minilm || exit 5
SECONDS=0
timeout 170 python3 -m benchmarks.ce_throughput --device cuda --profile --model /tmp/ce-minilm \
  --bundle .cache/ce/scifact/eval-test.json.gz --json-out "$OUT/profile.json" 2>&1 | grep -E '^\{"config' 
echo "profile done at ${SECONDS}s"
timeout 100 python3 -m training cross-encoder densify --bundle .cache/ce/scifact --model /tmp/minilm --device cuda 2>&1 | tail -1
mkdir -p /tmp/res
for v in $VARIANTS; do
  timeout "$TRAIN_S" python3 -m training cross-encoder train --bundle .cache/ce/scifact --out "/tmp/ce/$v" \
    --base-model /tmp/minilm --variants "$v" --code-commit "${CODE_COMMIT:-unknown}" > "/tmp/res/$v.log" 2>&1 &
done
wait
echo "training done at ${SECONDS}s"
for v in $VARIANTS; do cp "/tmp/ce/$v/training_report.json" "/tmp/res/$v.json" 2>/dev/null; done
grep -h -E "variant .*: dev" /tmp/res/*.log | cut -c1-300
tar -cf - -C /tmp/res . | xz -T8 > "$OUT/ablation.tar.xz"; ls -la "$OUT"
