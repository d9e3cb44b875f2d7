"""Compile a code-point normaliser map into SentencePiece's ``precompiled_charsmap`` bytes.

The format ``tokenizers.normalizers.Precompiled`` reads: u32 trie size in bytes, a darts-clone
double-array trie over the UTF-8 keys (32-bit units: label in bits 0-7, has-leaf bit 8, offset
in bits 10-31, extension bit 9 to shift the offset by 8; a leaf unit has bit 31 set and holds the
value), then the replacements as NUL-terminated UTF-8 strings; a key's value is the byte offset
of its replacement. Children of the node at ``p`` with offset ``o`` sit at ``p ^ o ^ label``.
"""

from __future__ import annotations

import struct

import numpy as np

_LEAF = -1  # child key of a trie node that ends a key


def build_precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """Bytes for ``normalizers.Precompiled``: each key (one or more characters) becomes its value."""
    blob = bytearray()
    trie: dict = {}
    for key in sorted(mapping):
        encoded = key.encode("utf-8")
        if not encoded or b"\0" in encoded or "\0" in mapping[key]:
            raise ValueError(f"normaliser key/value may not be empty or hold NUL: {key!r}")
        node = trie
        for byte in encoded:
            node = node.setdefault(byte, {})
        node[_LEAF] = len(blob)
        blob += mapping[key].encode("utf-8") + b"\0"
    units = _double_array(trie)
    return struct.pack("<I", 4 * len(units)) + units.astype("<u4").tobytes() + bytes(blob)


def _double_array(trie: dict) -> np.ndarray:
    units: dict[int, int] = {0: 0}
    used_bases: set[int] = set()
    first_free = 1
    stack = [(0, trie)]
    while stack:
        pos, node = stack.pop()
        labels = sorted(0 if key == _LEAF else key for key in node)
        while first_free in units:
            first_free += 1
        base = _find_base(labels, units, used_bases, first_free)
        used_bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("trie too large for darts-clone offsets")
        units[pos] |= (offset << 10) | ((1 << 8) if _LEAF in node else 0)
        for label in labels:
            child = base ^ label
            if label == 0:
                units[child] = (1 << 31) | node[_LEAF]
            else:
                units[child] = label
                stack.append((child, node[label]))
    # lookups XOR any byte into a base, so every touched 256-unit block must exist in full
    array = np.zeros((max(units) // 256 + 1) * 256, np.uint32)
    for pos, unit in units.items():
        array[pos] = unit
    return array


def _find_base(labels: list[int], units: dict[int, int], used_bases: set[int], start: int) -> int:
    free = start
    while True:
        if free not in units:
            base = free ^ labels[0]
            if base not in used_bases and all((base ^ label) not in units and (base ^ label) != 0
                                              for label in labels):
                return base
        free += 1
