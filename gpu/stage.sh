#!/usr/bin/env bash
# A file too large for one device call (e.g. the 94 MiB SmolLM2 GGUF; a call carries at most 64 MiB with the
# code) crosses in two calls to the same warm machine. See gpu/README.md ("Large files").
#   bash gpu/stage.sh split NAME FILE   here, after gpu/pack.sh and gpu/tree.sh slim: .gpu-stage/NAME.part-00|01
#                                       (part 00 sized to travel with .gpu), NAME.sha256; prints the two calls
#   bash gpu/stage.sh have              device: what is staged (the first call's command)
#   bash gpu/stage.sh join NAME DEST    device: parts -> DEST, checksum verified; exit 3 names what is missing
set -euo pipefail
cd "$(dirname "$0")/.."
mib() { echo $(( ($1 + 1048575) / 1048576 )); }
case "${1:-}" in
  split)
    name=${2:?NAME}; file=${3:?FILE}
    [ -f "$file" ] || { echo "no such file: $file" >&2; exit 2; }
    [ -d .gpu ] || { echo "run bash gpu/pack.sh first (.gpu travels with part 00)" >&2; exit 2; }
    limit=$((63 * 1048576))
    tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
    packed=$(du -sb .gpu | cut -f1)
    size=$(stat -c %s "$file")
    first=$((limit - tracked - packed))
    rest=$((size - first))
    [ "$first" -gt 0 ] && [ $((tracked + rest)) -le "$limit" ] || {
      echo "does not fit two calls: code $(mib "$tracked") MiB, .gpu $(mib "$packed") MiB, file $(mib "$size") MiB" \
           "(pack fewer data paths, or run gpu/tree.sh slim first)" >&2; exit 3; }
    mkdir -p .gpu-stage && rm -f .gpu-stage/"$name".*
    head -c "$first" "$file" > ".gpu-stage/$name.part-00"
    tail -c "+$((first + 1))" "$file" > ".gpu-stage/$name.part-01"
    sha256sum < "$file" | cut -d' ' -f1 > ".gpu-stage/$name.sha256"
    echo "call 1: carry [\".gpu\", \".gpu-stage/$name.part-00\", \".gpu-stage/$name.sha256\"]" \
         "($(mib $((tracked + packed + first))) MiB), command: bash gpu/stage.sh have"
    echo "call 2, within 30 s of call 1's reply (the machine must still be warm): carry" \
         "[\".gpu-stage/$name.part-01\"] ($(mib $((tracked + rest))) MiB), command: bash gpu/run.sh JOB ..."
    ;;
  have)
    ls -la .gpu-stage 2>/dev/null || echo "nothing staged"
    du -sh .gpu 2>/dev/null || echo "no .gpu";;
  join)
    name=${2:?NAME}; dest=${3:?DEST}
    for part in 00 01; do
      [ -f ".gpu-stage/$name.part-$part" ] || {
        echo "missing .gpu-stage/$name.part-$part: the machine went cold between the two calls; make both again" >&2
        exit 3; }
    done
    cat ".gpu-stage/$name.part-00" ".gpu-stage/$name.part-01" > "$dest"
    [ "$(sha256sum < "$dest" | cut -d' ' -f1)" = "$(cat ".gpu-stage/$name.sha256")" ] || {
      echo "checksum mismatch for $name: stage it again" >&2; exit 3; }
    echo "joined $name -> $dest";;
  *) echo "usage: bash gpu/stage.sh split NAME FILE | have | join NAME DEST" >&2; exit 2;;
esac
