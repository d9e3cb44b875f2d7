#!/usr/bin/env bash
# Every language module (LoRA and SFTM: ranking + 6 languages) trained on XQuAD-R and the held-out candidates
# reranked, in one call (was training/gpu_lang_mamba_ce_bench.sh, its language part, and
# training/language_modules/gpu_job.sh): python -m training.language_modules.job. Made models/lang-modules.
# The base must be the exact folder the modules are checked against at load (identity in module.json), so it
# travels as it is: no MiniLM beside it. Pack (here):
#   python -m training.language_modules.candidates --data ../shared/data/xquad-r --out runs/xquad/candidates.json
#   python -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("first_stage_runs", None); json.dump(d, open(sys.argv[2], "w"))' \
#       runs/xquad/candidates.json runs/xquad/candidates-slim.json
#   MINILM=0 bash gpu/pack.sh ../shared/data/xquad-r runs/xquad/candidates-slim.json=data/candidates.json models/ce-minilm
#   bash gpu/tree.sh slim
# Args: passed to the job (e.g. --epochs 3 --sftm-epochs 2; --base defaults to ce-minilm). Env: TRAIN_S (540).
# $OUT: lang-modules-lora.tar, lang-modules-sftm.tar (tar -xf ... -C models/), rerank.json, lang.log.xz
set -uo pipefail
lost=(); for p in data/xquad-r data/candidates.json models/ce-minilm/2_Dense; do [ -e $p ] || lost+=("$p"); done
[ ${#lost[@]} -eq 0 ] || { echo "missing ${lost[*]} (see the pack commands at the top of gpu/jobs/lang_modules.sh)" >&2; exit 3; }
timeout "${TRAIN_S:-540}" python3 -m training.language_modules.job --data data/xquad-r --candidates data/candidates.json \
  --out "$GPU_WORK/lang" "$@" > "$GPU_WORK/lang.log" 2>&1
rc=$?
echo "language modules exit $rc at ${SECONDS}s"
grep -E "done:|nDCG|Error|error" "$GPU_WORK/lang.log" | tail -8
cp "$GPU_WORK"/lang/*.tar "$GPU_WORK/lang/rerank.json" "$OUT/" 2>/dev/null
xz -c "$GPU_WORK/lang.log" > "$OUT/lang.log.xz"
ls -la "$OUT"
exit $rc
