#!/usr/bin/env bash
# Inputs too big for one call (the FIRST reranker's GGUF, a model beside other data): carried in pieces by
# several device calls to one warm machine, each kept there until the job checks and unpacks them.
# See gpu/README.md.
#   bash gpu/stage.sh NAME PATH...     here (symbolic links stay links): .gpu-stage/NAME/{1..N}/ (one piece each) + .gpu-stage/NAME/manifest
#   device calls K = 1..N, one right after the other (a machine stays warm 30 s after a call):
#       command "bash gpu/run.sh keep", carry [".gpu-stage/NAME/K"]        (models/ untracked: gpu/tree.sh slim)
#   then bash gpu/pack.sh ... (it packs the manifest) and the job call; the job runs
#       bash gpu/need.sh NAME DEST     which says which pieces are missing, or unpacks PATH's names into DEST
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash gpu/stage.sh NAME PATH..."
name=${1:?$usage}; shift
[ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }
case "$name" in *[!A-Za-z0-9_-]*) echo "NAME: letters, digits, - and _ only" >&2; exit 2 ;; esac
tracked=$(git ls-files -z | grep -zv '^models/' | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
size=${PIECE_BYTES:-$((64 * 1048576 - tracked - 2 * 1048576))}  # one call: the code (models/ untracked) and one piece, 2 MiB spare
out=.gpu-stage/$name
rm -rf "$out" && mkdir -p "$out"
members=()
for p in "$@"; do
  [ -e "$p" ] || { echo "no such path: $p" >&2; exit 2; }
  members+=(-C "$(cd "$(dirname "$p")" && pwd -P)" "$(basename "$p")")
done
tar -cf - --exclude=__pycache__ "${members[@]}" | xz -T2 -6 | split -b "$size" -d -a 2 - "$out/piece-"
pieces=("$out"/piece-*)
n=${#pieces[@]}
{
  echo "name $name"
  echo "pieces $n"
  echo "stream $(cat "${pieces[@]}" | sha256sum | cut -d' ' -f1)"
  k=0
  for f in "${pieces[@]}"; do k=$((k + 1)); echo "piece $k $(sha256sum "$f" | cut -d' ' -f1)"; done
  echo "holds $(for p in "$@"; do basename "$p"; done | tr '\n' ' ')"
  echo "made $(date -u +%FT%TZ) at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
} > "$out/manifest"
k=0
for f in "${pieces[@]}"; do
  k=$((k + 1)); mkdir -p "$out/$k"; mv "$f" "$out/$k/piece"; cp "$out/manifest" "$out/$k/manifest"
done
du -sh "$out"
echo "staged $name in $n piece(s). Device calls, one right after the other (bash gpu/tree.sh slim first):"
for k in $(seq 1 "$n"); do echo "  command \"bash gpu/run.sh keep\", carry [\".gpu-stage/$name/$k\"]"; done
echo "then: bash gpu/pack.sh ... (packs this manifest) and the job call, right after the last of these."
