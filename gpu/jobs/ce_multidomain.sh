#!/usr/bin/env bash
# The shipped reranker's recipe in one call (was training/gpu_ce_multidomain.sh, which made models/ce-minilm):
# side by side on the one GPU,
#   sf      SciFact only, listwise + curriculum + dense negatives (the SciFact recipe, for comparison)
#   mix-dn  SciFact + XQuAD-R en training articles, same recipe
#   mix-bm  SciFact + XQuAD-R en, BM25 negatives only
# Cranfield is only reported (--extra-eval). The multi-domain model is mix-dn or mix-bm, whichever has the
# better dev nDCG@10 (the same dev queries); then its end-to-end GPU throughput.
# Pack (here): bash gpu/pack.sh .cache/ce/scifact .cache/ce/xquad-en .cache/ce/cranfield
# Env: TRAIN_S (480: 330 s cut both multi-domain runs in their last evaluation, 2026-11-28), BENCH_S (170; 0: none)
# $OUT: ce-mix.tar.part-* (cat them | tar x: mix/, the model), results.tar.xz (reports, cards, logs, throughput)
set -uo pipefail
[ -n "${MINILM:-}" ] || { echo "this job needs MiniLM: pack without MINILM=0" >&2; exit 3; }
CE=.cache/ce
lost=(); for b in scifact xquad-en cranfield; do [ -f $CE/$b/train.json.gz ] || [ -f $CE/$b/eval-test.json.gz ] || lost+=("$CE/$b"); done
[ ${#lost[@]} -eq 0 ] || { echo "missing ${lost[*]} (pack: bash gpu/pack.sh $CE/scifact $CE/xquad-en $CE/cranfield)" >&2; exit 3; }
TRAIN_S=${TRAIN_S:-480}
R=$GPU_WORK/res; mkdir -p "$R"
for b in scifact xquad-en cranfield; do
  timeout 120 python3 -m training cross-encoder densify --bundle $CE/$b --model "$MINILM" --device cuda > "$R/densify-$b.log" 2>&1 &
done
wait
echo "densify done at ${SECONDS}s"
common=(--extra-eval $CE/cranfield/eval-test.json.gz --base-model "$MINILM" --code-commit "$CODE_COMMIT")
train() {  # name, variant, bundles...
  local name=$1 variant=$2; shift 2
  timeout "$TRAIN_S" python3 -m training cross-encoder train --bundle "$@" --out "$GPU_WORK/ce/$name" --variants "$variant" \
    "${common[@]}" > "$R/$name.log" 2>&1
  cp "$GPU_WORK/ce/$name/training_report.json" "$R/$name.json" 2>/dev/null && cp "$GPU_WORK/ce/$name/MODEL_CARD.md" "$R/$name.md"
}
train sf listwise+curriculum+dense-negs $CE/scifact &
train mix-dn listwise+curriculum+dense-negs $CE/scifact $CE/xquad-en &
train mix-bm listwise+curriculum $CE/scifact $CE/xquad-en &
wait
echo "training done at ${SECONDS}s"
grep -h -E "variant .*: dev" "$R"/*.log | cut -c1-500
MIX=$(python3 - "$R" <<'PY'
import json, sys
from pathlib import Path
d = {v: json.loads((Path(sys.argv[1]) / f"{v}.json").read_text())["chosen"]["dev_ndcg10"]
     for v in ("mix-dn", "mix-bm") if (Path(sys.argv[1]) / f"{v}.json").is_file()}
print(max(d, key=d.get) if d else "")
PY
)
echo "multi-domain model: ${MIX:-none (no run finished: raise TRAIN_S)}"
if [ -n "$MIX" ]; then
  cp -r "$GPU_WORK/ce/$MIX" "$GPU_WORK/mix"
  (cd "$GPU_WORK" && tar -cf - mix | split -b 15m - "$OUT/ce-mix.tar.part-")
  if [ "${BENCH_S:-170}" != 0 ]; then
    timeout "${BENCH_S:-170}" python3 -m benchmarks.ce_throughput --device cuda --profile --model "$GPU_WORK/mix" \
      --bundle $CE/scifact/eval-test.json.gz --json-out "$R/throughput.json" 2>&1 | grep -v -E "Loading weights|Batches" | tail -25
    echo "throughput done at ${SECONDS}s"
  fi
fi
tar -cf - -C "$R" . | xz -T8 > "$OUT/results.tar.xz"
ls -la "$OUT"
[ -n "$MIX" ] || exit 6
