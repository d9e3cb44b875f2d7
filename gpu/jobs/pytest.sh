#!/usr/bin/env bash
# The GPU-marked tests (pytest is on the machine).
python3 -m pytest -q -m gpu -p no:cacheprovider "$@"
