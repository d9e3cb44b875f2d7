#!/usr/bin/env bash
# Pack what one GPU call needs into .gpu/ (git-ignored; carry it with the call). See gpu/README.md.
#   bash gpu/pack.sh [PATH | SRC=DEST ...]
#     PATH in the repo         -> the same path on the machine (e.g. .cache/ce/scifact, models/ce-minilm)
#     PATH outside the repo    -> data/<its name> on the machine (e.g. ../shared/data/scifact -> data/scifact)
#     SRC=DEST                 -> DEST (a path relative to the repo root) on the machine
#   MINILM=0      do not pack all-MiniLM-L6-v2 (~20 MB; jobs that read $MINILM need it)
#   WHEELS="..."  more pure-Python distributions the machine lacks (as installed here), e.g. "mambapy gguf"
# Big inputs (a GGUF, several models) do not fit one call: stage them first (gpu/stage.sh), then pack;
# the manifests of what is staged travel in .gpu/stage/ so that the job can check what arrived.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LIMIT=$((64 * 1048576))
rm -rf .gpu && mkdir -p .gpu/whl .gpu/data
for dist in pydantic pydantic_core annotated_types typing_inspection ir_measures pytrec_eval_terrier ${WHEELS:-}; do
  v=$($PY -c "import importlib.metadata as m; print(m.version('$dist'))")
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .gpu/whl "$dist==$v"
done
if [ "${MINILM:-1}" != 0 ]; then
  $PY -m training.dense.compact_weights pack --model minilm --out .gpu/minilm-q8 >/dev/null
fi
repo=$(pwd -P)
: > .gpu/paths
for arg in "$@"; do
  src=${arg%%=*}
  [ -e "$src" ] || { echo "no such path: $src" >&2; exit 2; }
  if [ "$src" != "$arg" ]; then dest=${arg#*=}
  else
    abs=$(cd "$(dirname "$src")" 2>/dev/null && pwd -P)/$(basename "$src")
    case "$abs" in "$repo"/*) dest=${abs#"$repo"/} ;; *) dest=data/$(basename "$src") ;; esac
  fi
  case "$dest" in /*|..*|*/../*) echo "DEST must be a path inside the repo: $dest" >&2; exit 2 ;; esac
  mkdir -p ".gpu/data/$(dirname "$dest")"
  cp -r "$src" ".gpu/data/$dest" && chmod -R u+w ".gpu/data/$dest"  # read-only sources (../shared) stay editable here
  echo "$dest" >> .gpu/paths
  [ "$dest" = "$src" ] || echo "packed $src -> $dest (on the machine)"
done
# gzip'd JSON bundles and big JSON-lines files travel as xz (a half to a third); run.sh turns them back
find .gpu/data \( -name '*.json.gz' -o \( -name '*.jsonl' -size +512k \) \) -print0 | xargs -0 -r -P 2 -I{} sh -c '
  case "$1" in *.gz) zcat "$1" | xz -T1 -6 > "${1%.gz}.xz" ;; *) xz -T1 -6 -c "$1" > "$1.xz" ;; esac && rm "$1"' _ {}
mkdir -p .gpu/stage
for m in .gpu-stage/*/manifest; do [ -f "$m" ] && cp "$m" ".gpu/stage/$(basename "$(dirname "$m")").manifest"; done
ls .gpu/stage/*.manifest >/dev/null 2>&1 && echo "staged inputs the job will check: $(cd .gpu/stage && ls | sed 's/\.manifest$//' | tr '\n' ' ')"
git rev-parse --short HEAD > .gpu/commit 2>/dev/null || true
tracked=$(git ls-files -z | grep -zv '^models/' | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
packed=$(du -sb .gpu | cut -f1)
total=$((tracked + packed))
printf 'code (tracked, without models/): %.1f MiB; .gpu/: %.1f MiB; the call carries %.1f of 64 MiB\n' \
  "$(echo "$tracked/1048576" | bc -l)" "$(echo "$packed/1048576" | bc -l)" "$(echo "$total/1048576" | bc -l)"
[ "$total" -lt "$LIMIT" ] || { echo "too large for one call: pack fewer paths, MINILM=0, or stage the big ones (gpu/stage.sh)" >&2; exit 3; }
