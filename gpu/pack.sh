#!/usr/bin/env bash
# Pack what a GPU job needs into .gpu/ (git-ignored; carry it with the call). See gpu/README.md.
#   bash gpu/pack.sh [PATH ...]    PATHs (files or folders in the repo) are copied to .gpu/data/PATH
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/whl .gpu/data
for dist in pydantic pydantic_core annotated_types typing_inspection ir_measures pytrec_eval_terrier gguf; do
  v=$($PY -c "import importlib.metadata as m; print(m.version('$dist'))")
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .gpu/whl "$dist==$v"
done
$PY -m training.dense.compact_weights pack --model minilm --out .gpu/minilm-q8 >/dev/null
for path in "$@"; do
  [ -e "$path" ] || { echo "no such path: $path" >&2; exit 2; }
  mkdir -p ".gpu/data/$(dirname "$path")"
  cp -r "$path" ".gpu/data/$path"
done
# gzip'd JSON bundles travel as xz (about half the size); run.sh turns them back into .json.gz
find .gpu/data -name '*.json.gz' -print0 | xargs -0 -r -P 2 -I{} sh -c 'zcat "$1" | xz -T1 -6 > "${1%.gz}.xz" && rm "$1"' _ {}
# so do JSON-lines files (a corpus: a fifth of its size); run.sh unpacks them
find .gpu/data -name '*.jsonl' -print0 | xargs -0 -r -P 2 -I{} xz -T1 -6 {}
tracked=$(git ls-files -z | grep -zv '^models/' | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
packed=$(du -sb .gpu | cut -f1)
total=$((tracked + packed))
printf 'code (tracked, without models/): %.1f MiB; .gpu/: %.1f MiB; the call carries %.1f of 64 MiB\n' \
  "$(echo "$tracked/1048576" | bc -l)" "$(echo "$packed/1048576" | bc -l)" "$(echo "$total/1048576" | bc -l)"
[ "$total" -lt $((64 * 1048576)) ] || { echo "too large for one call: pack fewer paths" >&2; exit 3; }
