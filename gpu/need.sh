#!/usr/bin/env bash
# On the GPU machine, inside a job: bash gpu/need.sh NAME DEST
# Checks that every piece of the staged input NAME (gpu/stage.sh) was kept on this machine by the earlier
# calls (bash gpu/run.sh keep) and is the staging this call's .gpu/ expects; then unpacks it into DEST.
# Exit 3 with what is missing and how to bring it; never unpacks a partial input. See gpu/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: bash gpu/need.sh NAME DEST}
dest=${2:?usage: bash gpu/need.sh NAME DEST}
keep=${GPU_KEEP:-.gpu-keep}/stage/$name
expected=.gpu/stage/$name.manifest
field() { awk -v k="$1" '$1 == k {print $2}' "$2"; }
redo() {  # the calls that bring NAME
  local n=$1
  echo "  bring it: the staging calls, one right after the other (a machine goes cold 30 s after a call), then this job:" >&2
  for k in $(seq 1 "$n"); do echo "    command \"bash gpu/run.sh keep\", carry [\".gpu-stage/$name/$k\"]" >&2; done
}
if [ ! -f "$expected" ]; then
  echo "missing: $name was not staged for this call (no $expected: run bash gpu/stage.sh $name ... before bash gpu/pack.sh)" >&2
  exit 3
fi
n=$(field pieces "$expected")
if [ ! -f "$keep/manifest" ]; then
  echo "missing on this machine: $name, all $n piece(s): none were kept here (a fresh machine, or the staging calls were not made)" >&2
  redo "$n"; exit 3
fi
if [ "$(field stream "$keep/manifest")" != "$(field stream "$expected")" ]; then
  echo "missing on this machine: $name as packed ($(grep ^made "$expected")); it holds another staging ($(grep ^made "$keep/manifest"))" >&2
  redo "$n"; exit 3
fi
missing=()
for k in $(seq 1 "$n"); do
  want=$(awk -v k="$k" '$1 == "piece" && $2 == k {print $3}' "$expected")
  [ -f "$keep/piece-$k" ] && [ "$(sha256sum "$keep/piece-$k" | cut -d' ' -f1)" = "$want" ] || missing+=("$k")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing on this machine: $name piece(s) ${missing[*]} of $n (kept: $(ls "$keep" | grep -c '^piece-'))" >&2
  redo "$n"; exit 3
fi
mkdir -p "$dest"
for k in $(seq 1 "$n"); do cat "$keep/piece-$k"; done | xz -d | tar -x -C "$dest" || { echo "$name: unpacking failed" >&2; exit 4; }
echo "$name: $n piece(s) unpacked into $dest ($(grep ^holds "$expected" | cut -d' ' -f2-))"
