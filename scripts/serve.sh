#!/usr/bin/env bash
# Fresh machine -> running service over SciFact: install, build (or reuse) the indexes, serve on :8000.
# Data directory: $SEARCH_DATA_DIR (default ../shared/data next to the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
DATA_DIR=${SEARCH_DATA_DIR:-../shared/data}
COLLECTION=${SEARCH_COLLECTION:-scifact}
python -m indexer build --dataset "$DATA_DIR/$COLLECTION"
export SEARCH_COLLECTIONS="[\"$COLLECTION\"]"
# The FIRST pipelines (bm25>>first, bm25>>ce>>first) load a 135M LLM and do not beat BM25 yet: they
# have serve_by_default: false in configs/pipelines.yaml, so `python -m service` leaves them off too;
# SEARCH_PIPELINES='["bm25", "bm25>>ce>>first"]' (JSON list) loads exactly the pipelines it names.
exec python -m service --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}"
