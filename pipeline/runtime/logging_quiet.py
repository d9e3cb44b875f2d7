"""Silence log lines that look like failures but are an optional fast path being probed.

faiss logs ``Could not load library with AVX512 support due to: ModuleNotFoundError(...)`` at
INFO on every CPU without its AVX512 build, then loads the AVX2 one; a user reads the
traceback-like line as a failure. The line's logger is raised to WARNING; real faiss
errors still show.
"""

from __future__ import annotations

import logging

PROBE_LOGGERS = ("faiss.loader",)


def quiet_optional_probes() -> None:
    """Raise the optional-probe loggers to WARNING (call after configuring logging)."""
    for name in PROBE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
