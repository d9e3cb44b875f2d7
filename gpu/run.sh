#!/usr/bin/env bash
# On the GPU machine: bash gpu/run.sh JOB [ARGS]  (carry [".gpu"]). See gpu/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
job=${1:?usage: bash gpu/run.sh JOB [ARGS]}; shift
missing=()
[ -d .gpu/whl ] || missing+=(".gpu/whl")
[ -f .gpu/minilm-q8/weights.q8.safetensors.xz ] || missing+=(".gpu/minilm-q8")
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
python3 -m training.dense.compact_weights unpack --packed .gpu/minilm-q8 --out "$GPU_WORK/minilm" || exit 5
export MINILM=$GPU_WORK/minilm
if [ -d .gpu/data ]; then  # each packed path back where the repo expects it (xz'd bundles as .json.gz)
  cp -r .gpu/data/. .
  (cd .gpu/data && find . -name '*.json.xz') | while read -r f; do
    python3 -c "import gzip,lzma,sys; gzip.open(sys.argv[2],'wb',1).write(lzma.open(sys.argv[1]).read())" "$f" "${f%.xz}.gz" \
      && rm "$f"
  done
  (cd .gpu/data && find . -name '*.jsonl.xz') | while read -r f; do xz -d -c "$f" > "${f%.xz}" && rm -f "$f"; done
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
SECONDS=0
bash "gpu/jobs/$job.sh" "$@" 2>&1 | tee "$GPU_WORK/job.log"
rc=${PIPESTATUS[0]}
echo "job $job: exit $rc after ${SECONDS}s"
tail -c 2000000 "$GPU_WORK/job.log" | xz -T4 > "$OUT/job.log.xz"
exit "$rc"
