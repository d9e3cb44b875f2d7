"""API-key strength: a production key needs length and entropy (not a blocklist); ``new_key`` makes one.

Keys are stored as SHA-256 digests, so their strength can only be judged in clear: when
``python -m service --hash-key KEY`` hashes one, and when a production request presents one
(a configured but weak key, e.g. ``CHANGEME``, is then refused with 403).

Example::

    key_weakness("CHANGEME")      # "is 8 characters; use at least 20" (None for a strong key)
    key = new_key()               # 43 random URL-safe characters (256 bits)
"""

from __future__ import annotations

import math
import secrets
from collections import Counter

MIN_KEY_CHARS = 20
MIN_KEY_BITS = 64.0
"""Shannon entropy of the key's own characters times its length (``aaaa...`` has 0 bits)."""
MIN_DISTINCT = 8


def key_bits(key: str) -> float:
    counts, n = Counter(key), len(key)
    return -n * sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def key_weakness(key: str) -> str | None:
    """Why ``key`` is too weak for production, or None."""
    if len(key) < MIN_KEY_CHARS:
        return f"is {len(key)} characters; use at least {MIN_KEY_CHARS}"
    if len(set(key)) < MIN_DISTINCT:
        return f"uses {len(set(key))} distinct characters; use at least {MIN_DISTINCT}"
    if key_bits(key) < MIN_KEY_BITS:
        return f"has about {key_bits(key):.0f} bits of entropy; use at least {MIN_KEY_BITS:.0f}"
    return None


def new_key() -> str:
    return secrets.token_urlsafe(32)
