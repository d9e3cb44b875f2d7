#!/usr/bin/env bash
# Train every language module (LoRA + SFTM, ranking + 6 languages) and rerank the held-out
# candidates, in one GPU run. Arguments: DATA (xquad-r folder) CANDIDATES (from candidates.py)
# BASE (base reranker under models/, e.g. ce-minilm) OUT (results folder) [EPOCHS].
# Writes OUT/modules.tar (lang-modules/{lora,sftm}/...), OUT/rerank.json, OUT/*.log. SFTM_EPOCHS overrides
# the epochs of each SFTM phase.
set -euo pipefail
DATA=$1 CANDIDATES=$2 BASE=$3 OUT=$4 EPOCHS=${5:-3} BATCH=${6:-32}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
M=$OUT/lang-modules
common=(--data "$DATA" --out "$M" --base "$BASE" --epochs "$EPOCHS" --batch-questions "$BATCH")
evaluate=(--data "$DATA" --candidates "$CANDIDATES" --modules "$M" --base "$BASE" --batch-size 512)
SECONDS=0
python3 -m training.language_modules.adapters_cli "${common[@]}" 2>&1 | tee "$OUT/train_lora.log"
echo "lora trained at ${SECONDS}s"
tar -cf "$OUT/modules.tar" -C "$OUT" lang-modules
python3 -m training.language_modules.sftm_cli "${common[@]}" --epochs "${SFTM_EPOCHS:-$EPOCHS}" 2>&1 | tee "$OUT/train_sftm.log"
echo "sftm trained at ${SECONDS}s"
tar -cf "$OUT/modules.tar" -C "$OUT" lang-modules
python3 -m training.language_modules.evaluate "${evaluate[@]}" --out "$OUT/rerank.json" 2>&1 | tee "$OUT/eval.log"
echo "evaluated at ${SECONDS}s"
rm -rf "$M"
