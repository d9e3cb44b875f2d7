#!/usr/bin/env bash
# One GPU-machine call (issue 10): multi-domain cross-encoder training, Cranfield as the unseen
# collection, then the end-to-end GPU throughput benchmark (tokenization included).
# Carried (git-ignored): .device/whl (pydantic... wheels), .device/minilm-q8 (packed MiniLM, every
# vocabulary row), .cache/ce/{scifact,xquad-en,cranfield} bundles. The models are also left in $STASH
# for the calls that follow on the same warm machine (training/listwise/gpu_job.sh, eval/gpu_report.sh).
# Variants, trained side by side (each its own `python -m training cross-encoder train`):
#   sf      SciFact only, the shipped recipe (listwise + curriculum + dense negatives): the baseline re-run
#   mix     SciFact + XQuAD-R en training articles, same recipe
#   mix-bm  SciFact + XQuAD-R en, BM25 negatives only
# mix vs mix-bm is chosen by their (shared) dev set; sf is reported for comparison only.
# Usage: OUT=<dir> CODE_COMMIT=<sha> bash training/gpu_ce_multidomain.sh [train seconds]
set -uo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
TRAIN_S=${1:-480}  # 330 s killed both multi-domain runs in their last evaluation (2026-11-28)
STASH=${STASH:-/tmp/stash}
mkdir -p "$STASH" /tmp/res
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
python3 -m training.dense.compact_weights unpack --packed .device/minilm-q8 --out /tmp/minilm || exit 4
SECONDS=0
for b in scifact xquad-en cranfield; do
  timeout 120 python3 -m training cross-encoder densify --bundle .cache/ce/$b --model /tmp/minilm --device cuda 2>&1 | tail -1
done
echo "densify done at ${SECONDS}s"
common=(--extra-eval .cache/ce/cranfield/eval-test.json.gz --base-model /tmp/minilm --code-commit "${CODE_COMMIT:-unknown}")
train() {  # name, variant, bundles...
  local name=$1 variant=$2; shift 2
  timeout "$TRAIN_S" python3 -m training cross-encoder train --bundle "$@" --out "/tmp/ce/$name" --variants "$variant" \
    "${common[@]}" > "/tmp/res/$name.log" 2>&1
}
train sf listwise+curriculum+dense-negs .cache/ce/scifact & P1=$!
train mix-dn listwise+curriculum+dense-negs .cache/ce/scifact .cache/ce/xquad-en & P2=$!
train mix-bm listwise+curriculum .cache/ce/scifact .cache/ce/xquad-en & P3=$!
wait $P1 $P2 $P3
echo "training done at ${SECONDS}s"
for v in sf mix-dn mix-bm; do cp "/tmp/ce/$v/training_report.json" "/tmp/res/$v.json" && cp "/tmp/ce/$v/MODEL_CARD.md" "/tmp/res/$v.md"; done
grep -h -E "variant .*: dev" /tmp/res/*.log | cut -c1-500
# the multi-domain model: mix-dn or mix-bm, whichever has the better dev nDCG@10 (same dev queries)
MIX=$(python3 -c "
import json, os
d = {v: json.load(open(f'/tmp/res/{v}.json'))['chosen']['dev_ndcg10'] for v in ('mix-dn', 'mix-bm') if os.path.exists(f'/tmp/res/{v}.json')}
print(max(d, key=d.get) if d else '')")
echo "multi-domain model: ${MIX:-none (no run finished)}"
[ -n "$MIX" ] || exit 6
cp -r "/tmp/ce/$MIX" /tmp/ce/mix && cp -r /tmp/ce/mix "$STASH/ce-mix" && cp -r /tmp/ce/sf "$STASH/ce-sf"
(cd /tmp/ce && tar -cf - mix | split -b 15m - "$OUT/ce-mix.tar.part-")
timeout 170 python3 -m benchmarks.ce_throughput --device cuda --profile --model /tmp/ce/mix \
  --bundle .cache/ce/scifact/eval-test.json.gz --json-out /tmp/res/throughput.json 2>&1 | grep -v -E "Loading weights|Batches" | tail -25
echo "throughput done at ${SECONDS}s"
tar -cf - -C /tmp/res . | xz -T8 > "$OUT/results.tar.xz"; ls -la "$OUT" "$STASH"
