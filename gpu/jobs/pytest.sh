#!/usr/bin/env bash
# The GPU-marked tests (pytest is on the machine). Collects only the test files that hold such tests (or the
# files given): the others import the service's packages (FastAPI, ...), which the machine lacks, and their
# collection errors would fail the run. The test needs the shipped reranker; pack (here):
#   MINILM=0 bash gpu/pack.sh models/ce-minilm && bash gpu/tree.sh slim
#   device call: command "bash gpu/run.sh pytest", carry [".gpu"]; then: bash gpu/tree.sh restore
set -uo pipefail
files=("$@")
[ $# -gt 0 ] || mapfile -t files < <(grep -l -E '^@pytest\.mark\.gpu|pytestmark = .*mark\.gpu' tests/test_*.py)
[ ${#files[@]} -gt 0 ] || { echo "no test file holds a gpu-marked test" >&2; exit 5; }
[ -f models/ce-minilm/2_Dense/model.safetensors ] || echo "note: models/ce-minilm was not packed: its test will be skipped" >&2
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"' || exit 4
python3 -m pytest -q -rs -m gpu -p no:cacheprovider "${files[@]}"
