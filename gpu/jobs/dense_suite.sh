#!/usr/bin/env bash
# The dense training suite of issue 5 in one call (was training/gpu_dense_and_ce_ablation.sh, its dense part,
# and training/gpu_lang_mamba_ce_bench.sh, its suite part): first the indexer's encode throughput (issue 9,
# alone on the GPU), then python -m training.dense.suite (every step, or those named).
# Pack (here): WHEELS=mambapy bash gpu/pack.sh ../shared/data/scifact ../shared/data/cranfield ../shared/data/xquad-r
#   (on the machine: data/scifact, data/cranfield, data/xquad-r; mambapy only for the mamba steps)
# Args: suite steps (default all; e.g. "separate mamba-distill mamba-ft", as the second call of 2026-11-27 ran).
# Env: TRAIN_S (420), BUDGET_SCALE (1), ENCODE_BENCH=0 to skip the throughput benchmark.
# $OUT: results.tar.xz (results.json, cards, TREC runs, suite.log), encode.log
set -uo pipefail
[ -n "${MINILM:-}" ] || { echo "this job needs MiniLM: pack without MINILM=0" >&2; exit 3; }
lost=(); for d in scifact cranfield xquad-r; do [ -d data/$d ] || lost+=("data/$d"); done
[ ${#lost[@]} -eq 0 ] || { echo "missing ${lost[*]} (pack: bash gpu/pack.sh ../shared/data/scifact ../shared/data/cranfield ../shared/data/xquad-r)" >&2; exit 3; }
only=(); [ $# -gt 0 ] && only=(--only "$@")
if printf '%s\n' "${@:-all}" | grep -q -E '^(all|mamba.*)$' && ! python3 -c 'import mambapy' 2>/dev/null; then
  echo "the mamba steps need mambapy: pack with WHEELS=mambapy" >&2; exit 3
fi
R=$GPU_WORK/res; mkdir -p "$R"
if [ "${ENCODE_BENCH:-1}" = 1 ]; then
  timeout 100 python3 -m benchmarks.encode_throughput --dataset data/scifact --model "$MINILM" --device cuda \
    --batch-size 256 --repeats 3 2>&1 | grep -v -E "Batches|Loading weights" | tee "$OUT/encode.log" | tail -12
  echo "encode bench done at ${SECONDS}s"
fi
timeout "${TRAIN_S:-420}" python3 -m training.dense.suite --data-dir data --base "$MINILM" --work "$GPU_WORK/work" \
  --out "$R/dense" --budget-scale "${BUDGET_SCALE:-1}" "${only[@]}" > "$R/suite.log" 2>&1
rc=$?
echo "suite exit $rc at ${SECONDS}s"
grep -v -E "Loading|Batches|MISSING|LOAD REPORT|^Key|^---|^Notes|pooler|^\s*$" "$R/suite.log" | tail -25
tar -cf - -C "$R" . | xz -T8 -6 > "$OUT/results.tar.xz"
ls -la "$OUT"
exit $rc
