"""Progress display shared by the index builders (tqdm on a terminal, log lines otherwise)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: int | None, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="doc", file=sys.stderr, mininterval=1.0, dynamic_ncols=True)
