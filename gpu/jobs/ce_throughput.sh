#!/usr/bin/env bash
# The shipped cross-encoder's end-to-end GPU throughput (tokenization included; was the first part of
# training/gpu_lang_mamba_ce_bench.sh and of eval/gpu_report.sh): benchmarks.ce_throughput on the SciFact
# test pairs, optionally --profile (where the time goes) and --micro-batch (8 threads of 100-pair requests).
# Pack (here): MINILM=0 bash gpu/pack.sh models/ce-minilm .cache/ce/scifact/eval-test.json.gz && bash gpu/tree.sh slim
# Env: MODEL (models/ce-minilm), PROFILE=1, MICRO_BATCH=1 (with PROFILE), BENCH_S (300)
# $OUT: throughput.json
set -uo pipefail
MODEL=${MODEL:-models/ce-minilm}
lost=(); for p in "$MODEL/2_Dense/model.safetensors" .cache/ce/scifact/eval-test.json.gz; do [ -e "$p" ] || lost+=("$p"); done
[ ${#lost[@]} -eq 0 ] || { echo "missing ${lost[*]} (pack: MINILM=0 bash gpu/pack.sh $MODEL .cache/ce/scifact/eval-test.json.gz)" >&2; exit 3; }
sha256sum "$MODEL/model.safetensors"
timeout "${BENCH_S:-300}" python3 -m benchmarks.ce_throughput --device cuda ${PROFILE:+--profile} ${MICRO_BATCH:+--micro-batch} \
  --model "$MODEL" --bundle .cache/ce/scifact/eval-test.json.gz --json-out "$OUT/throughput.json" 2>&1 \
  | grep -v -E "Loading weights|Batches" | tail -30
