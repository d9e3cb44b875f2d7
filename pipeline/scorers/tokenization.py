"""How a cross-encoder pair becomes token ids: the truncation policy, length batching, padding.

Truncation (the one policy, used by serving and training alike): the query keeps at most
``query_max_tokens`` word pieces; the passage fills the rest up to ``max_length`` including
``[CLS] query [SEP] passage [SEP]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pair_token_ids(query: list[int], passage: list[int], cls_id: int, sep_id: int, max_length: int,
                   query_max_tokens: int) -> tuple[list[int], list[int]]:
    """``([CLS] q [SEP] p [SEP], token types)`` with the documented truncation policy.

    >>> pair_token_ids([7, 8, 9], [1, 2, 3, 4], 101, 102, max_length=8, query_max_tokens=2)
    ([101, 7, 8, 102, 1, 2, 3, 102], [0, 0, 0, 0, 1, 1, 1, 1])
    """
    q = query[:query_max_tokens]
    room = max(max_length - len(q) - 3, 0)
    p = passage[:room]
    ids = [cls_id, *q, sep_id, *p, sep_id]
    return ids, [0] * (len(q) + 2) + [1] * (len(p) + 1)


def length_batches(lengths: Sequence[int], batch_size: int, batch_tokens: int, multiple: int = 8) -> list[list[int]]:
    """Indices grouped into batches, longest first; each batch's padded size stays under ``batch_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = round_up(lengths[current[0]] if current else lengths[i], multiple)
        if current and (len(current) >= batch_size or (len(current) + 1) * width > batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_pairs(rows, pad_id: int, torch, device: str, multiple: int = 8):
    """``(ids, types, mask)`` long tensors of encoded pairs, padded to a multiple of ``multiple``."""
    width = round_up(max(len(ids) for ids, _ in rows), multiple)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (row_ids, row_types) in enumerate(rows):
        n = len(row_ids)
        ids[r, :n] = torch.tensor(row_ids)
        types[r, :n] = torch.tensor(row_types)
        mask[r, :n] = 1
    if device != "cpu":
        return (ids.pin_memory().to(device, non_blocking=True), types.pin_memory().to(device, non_blocking=True),
                mask.pin_memory().to(device, non_blocking=True))
    return ids, types, mask




def batch_arrays(rows: Sequence[tuple[np.ndarray, np.ndarray]], cls_id: int, sep_id: int, pad_id: int,
                 multiple: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[CLS] q [SEP] p [SEP]`` rows of already-cut ``(query ids, passage ids)`` padded into
    ``(ids, types, mask)`` int64 arrays of a width that is a multiple of ``multiple``."""
    q_len = np.fromiter((len(q) for q, _ in rows), dtype=np.int64, count=len(rows))
    n = q_len + np.fromiter((len(p) for _, p in rows), dtype=np.int64, count=len(rows)) + 3
    width = round_up(int(n.max()), multiple)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    ids[:, 0] = cls_id
    for r, (q, p) in enumerate(rows):
        a = len(q)
        ids[r, 1 : 1 + a] = q
        ids[r, 1 + a] = sep_id
        ids[r, 2 + a : 2 + a + len(p)] = p
        ids[r, 2 + a + len(p)] = sep_id
    col = np.arange(width)[None, :]
    mask = col < n[:, None]
    types = (col >= (q_len + 2)[:, None]) & mask
    return ids, types.astype(np.int64), mask.astype(np.int64)
