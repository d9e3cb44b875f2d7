"""Identifiers of listwise prompts and robust parsing of generated permutations.

A listwise prompt labels its m passages ``[A] .. [T]`` (one letter each: a single
token for the SmolLM2 / GPT-2 style tokenizers, which split numbers above 9 into
digits). A generated answer such as ``"[C] > [A] > [B]"`` is parsed into window
positions; whatever the model writes (repeats, unknown ids, missing ids, garbage)
the result holds every position exactly once::

    >>> parse_permutation("[C] > [A] > [C] > [Z] blah", 4)
    [2, 0, 1, 3]
"""

from __future__ import annotations

import re
import string
from typing import Sequence

LABELS = string.ascii_uppercase
MAX_WINDOW = len(LABELS)

# "[C]", "[ c ]", "(C)", "C]" and a bare capital letter standing alone ("C > A").
_BRACKETED = re.compile(r"[\[(]\s*([A-Za-z])\s*[\])]|(?<![A-Za-z])([A-Z])\](?![A-Za-z])")
_BARE = re.compile(r"(?<![A-Za-z\[(])([A-Z])(?![A-Za-z\])])")


def labels(size: int) -> list[str]:
    """The identifiers of a window of ``size`` passages: ``["A", "B", ...]``."""
    if not 1 <= size <= MAX_WINDOW:
        raise ValueError(f"a listwise window holds 1..{MAX_WINDOW} passages, got {size}")
    return list(LABELS[:size])


def format_permutation(order: Sequence[int]) -> str:
    """``[2, 0, 1] -> "[C] > [A] > [B]"`` (the generation target)."""
    return " > ".join(f"[{LABELS[i]}]" for i in order)


def _found(text: str) -> list[str]:
    if not isinstance(text, str):
        return []
    found = [(m.group(1) or m.group(2)).upper() for m in _BRACKETED.finditer(text)]
    return found or _BARE.findall(text)


def is_clean(text: str, size: int) -> bool:
    """True when the text names every window position exactly once and nothing else (no repair needed)."""
    found = _found(text)
    return len(found) == size and sorted(ord(c) - ord("A") for c in found) == list(range(size))


def parse_permutation(text: str, size: int) -> list[int]:
    """Window positions in the order the text ranks them; every position exactly once.

    Bracketed ids are read first (``[C]``, ``(c)``, ``C]``); if the text holds none,
    bare capital letters are used. Ids outside the window and repeats are dropped;
    positions never mentioned keep their input order after the mentioned ones.
    """
    labels(size)  # validates size
    found = _found(text)
    order: list[int] = []
    seen: set[int] = set()
    for letter in found:
        pos = ord(letter) - ord("A")
        if 0 <= pos < size and pos not in seen:
            seen.add(pos)
            order.append(pos)
    order.extend(i for i in range(size) if i not in seen)
    return order
