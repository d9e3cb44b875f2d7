#!/usr/bin/env bash
# On the GPU machine: bash gpu/run.sh JOB [ARGS]   (carry [".gpu"]; see gpu/README.md)
#                     bash gpu/run.sh keep         (carry [".gpu-stage/NAME/K"]: keep a staged piece, gpu/stage.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
job=${1:?usage: bash gpu/run.sh JOB [ARGS] | keep}; shift
export GPU_KEEP=$PWD/.gpu-keep  # git-ignored: stays on a warm machine between calls, absent on a fresh one
if [ "$job" = keep ]; then  # move every carried piece into .gpu-keep/stage/NAME/, checked against its manifest
  found=0
  for dir in .gpu-stage/*/[0-9]*/; do
    [ -f "$dir/piece" ] || continue
    found=1
    name=$(awk '$1 == "name" {print $2}' "$dir/manifest"); k=$(basename "$dir")
    want=$(awk -v k="$k" '$1 == "piece" && $2 == k {print $3}' "$dir/manifest")
    [ "$(sha256sum "$dir/piece" | cut -d' ' -f1)" = "$want" ] || { echo "$name piece $k: damaged in transit" >&2; exit 3; }
    keep=$GPU_KEEP/stage/$name
    if [ -f "$keep/manifest" ] && ! cmp -s "$keep/manifest" "$dir/manifest"; then rm -rf "$keep"; fi  # a new staging
    mkdir -p "$keep" && mv "$dir/piece" "$keep/piece-$k" && cp "$dir/manifest" "$keep/manifest"
    n=$(awk '$1 == "pieces" {print $2}' "$keep/manifest")
    echo "kept $name piece $k of $n; on this machine now: $(cd "$keep" && ls piece-* | sed 's/piece-//' | sort -n | tr '\n' ' ')"
  done
  [ "$found" = 1 ] || { echo "nothing to keep: carry one .gpu-stage/NAME/K folder (bash gpu/stage.sh)" >&2; exit 3; }
  exit 0
fi
missing=()
[ -d .gpu/whl ] || missing+=(".gpu/whl")
[ -f "gpu/jobs/$job.sh" ] || missing+=("gpu/jobs/$job.sh")
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing on this machine: ${missing[*]} (run bash gpu/pack.sh here and carry .gpu with the call)" >&2
  exit 3
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
export GPU_WORK=${GPU_WORK:-$(mktemp -d)} OUT=${OUT:-$GPU_WORK/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$GPU_WORK/site" .gpu/whl/*.whl || exit 4
export PYTHONPATH="$GPU_WORK/site:$PWD"
if [ -f .gpu/minilm-q8/weights.q8.safetensors.xz ]; then
  python3 -m training.dense.compact_weights unpack --packed .gpu/minilm-q8 --out "$GPU_WORK/minilm" || exit 5
  export MINILM=$GPU_WORK/minilm
else
  export MINILM=""  # packed with MINILM=0; a job that needs it says so
fi
if [ -d .gpu/data ]; then  # each packed path back where the repo expects it (xz'd files as they were)
  cp -r .gpu/data/. .
  (cd .gpu/data && find . -name '*.xz') | while read -r f; do
    case "$f" in
      *.json.xz) python3 -c "import gzip,lzma,sys; gzip.open(sys.argv[2],'wb',1).write(lzma.open(sys.argv[1]).read())" "$f" "${f%.xz}.gz" ;;
      *.jsonl.xz) xz -d -c "$f" > "${f%.xz}" ;;
      *) continue ;;  # packed as .xz by the user: left as it is
    esac && rm "$f"
  done
fi
lost=()
while read -r p; do [ -e "$p" ] || lost+=("$p"); done < <(cat .gpu/paths 2>/dev/null)
[ ${#lost[@]} -eq 0 ] || { echo "packed but not restored: ${lost[*]}" >&2; exit 6; }
export CODE_COMMIT=${CODE_COMMIT:-$(cat .gpu/commit 2>/dev/null || echo unknown)}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
SECONDS=0
bash "gpu/jobs/$job.sh" "$@" 2>&1 | tee "$GPU_WORK/job.log"
rc=${PIPESTATUS[0]}
echo "job $job: exit $rc after ${SECONDS}s"
tail -c 2000000 "$GPU_WORK/job.log" | xz -T4 > "$OUT/job.log.xz"
exit "$rc"
