#!/usr/bin/env bash
# Install (if needed) and run the default test suite (no slow, no GPU tests). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
