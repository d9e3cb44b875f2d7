#!/usr/bin/env bash
# One GPU-machine call: the indexer's encode throughput (issue 9), the dense training suite
# (issue 5) and the cross-encoder ablation variants (issue 10), the last two side by side.
#
# Carried (git-ignored, named in the device tool's `carry`): .device/whl (pydantic, mambapy, ...),
# .device/minilm-q8 (MiniLM, int8-packed: training.dense.compact_weights pack), .device/data
# (scifact, cranfield, xquad-r/en; big files xz'd), .cache/ce/scifact (from `cross-encoder mine`).
# Usage: OUT=<dir> CODE_COMMIT=<sha> bash training/gpu_dense_and_ce_ablation.sh [seconds for training]
# Writes $OUT/results.tar (suite results, cards, runs, CE reports) and logs.
set -uo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
TRAIN_S=${1:-420}
VARIANTS=${VARIANTS:-"listwise+curriculum listwise+curriculum+dense-negs listwise pointwise+curriculum pointwise"}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
python3 -m training.dense.compact_weights unpack --packed .device/minilm-q8 --out /tmp/minilm || exit 4
python3 -m training.dense.compact_weights unpack-tree --src .device/data --out /tmp/data || exit 5
mkdir -p /tmp/res/ce
SECONDS=0
timeout 100 python3 benchmarks/encode_throughput.py --dataset /tmp/data/scifact --model /tmp/minilm --device cuda \
  --batch-size 256 --repeats 3 2>&1 | grep -v -E "Batches|Loading weights" | tee "$OUT/encode.log" | tail -12
echo "encode bench done at ${SECONDS}s"
timeout 110 python3 -m training cross-encoder densify --bundle .cache/ce/scifact --model /tmp/minilm --device cuda 2>&1 | tail -2
timeout "$TRAIN_S" python3 -m training.dense.suite --data-dir /tmp/data --base /tmp/minilm --work /tmp/work \
  --out /tmp/res/dense --budget-scale "${BUDGET_SCALE:-1}" > "$OUT/suite.log" 2>&1 &
for v in $VARIANTS; do
  timeout "$TRAIN_S" python3 -m training cross-encoder train --bundle .cache/ce/scifact --out "/tmp/ce/$v" \
    --base-model /tmp/minilm --variants "$v" --code-commit "${CODE_COMMIT:-unknown}" > "/tmp/res/ce/$v.log" 2>&1 &
done
wait
echo "training done at ${SECONDS}s"
for v in $VARIANTS; do cp "/tmp/ce/$v/training_report.json" "/tmp/res/ce/$v.json" 2>/dev/null; done
grep -h -E "variant .*: dev" /tmp/res/ce/*.log | tail -10
tail -25 "$OUT/suite.log"
tar -cf "$OUT/results.tar" -C /tmp/res . && ls -la "$OUT"
