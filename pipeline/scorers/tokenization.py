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
    """``(ids, types, mask)`` long tensors of encoded pairs, padded to a multiple of ``multiple``.

    Filled as numpy arrays (a per-row ``torch.tensor`` cost ~0.2 ms a row: 56 ms for 256 pairs, which made
    the trainer's evaluation CPU-bound at about 1,000 pairs/s on the H200; numpy takes 5 ms).
    """
    width = round_up(max(len(ids) for ids, _ in rows), multiple)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    lengths = np.fromiter((len(row_ids) for row_ids, _ in rows), dtype=np.int64, count=len(rows))
    for r, (row_ids, row_types) in enumerate(rows):
        n = len(row_ids)
        ids[r, :n] = row_ids
        types[r, :n] = row_types
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    out = tuple(torch.from_numpy(a) for a in (ids, types, mask))
    if device != "cpu":
        return tuple(t.pin_memory().to(device, non_blocking=True) for t in out)
    return out


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


def truncating_backend(tokenizer, max_length: int):
    """A private copy of the fast tokenizer's Rust backend that truncates to ``max_length`` and never
    pads, or None for a slow tokenizer. Its ``encode_batch`` gives the same ids as ``tokenizer(...)``
    without building a ``BatchEncoding`` (masks, type ids, offsets) in Python, so tokenization holds
    the GIL for less time; the GPU path also hands it to a child process as JSON."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not getattr(tokenizer, "is_fast", False):
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_padding()
    copy.enable_truncation(max_length)
    return copy


def ready_slices(pairs: Sequence[tuple[str, str]], first_slice: int, chunk_pairs: int,
                 known=()) -> list[tuple[list[str], list[int]]]:
    """``(texts to tokenize, pairs ready once they are)`` per slice of distinct texts: every query in
    the first slice (few and short), with the first ``first_slice`` passages; then the passages in order
    of first use, twice as many each slice, at most ``chunk_pairs``. Every pair lands in the slice of
    its passage, so pairs become ready as evenly as the passages are tokenized. (With the queries in
    order of first use too, the pairs of late queries waited for the last slices: 70% of the SciFact
    test pairs became ready in the last two of eight, and the GPU idled until then.) ``known`` texts (cached
    ids) are not tokenized: their pairs are ready with the first slice."""
    queries = list(dict.fromkeys(q for q, _ in pairs))
    slice_of: dict[str, int] = {**dict.fromkeys(known, 0), **dict.fromkeys(queries, 0)}
    slices: list[list[str]] = [list(queries)]
    size, in_slice = first_slice, 0
    for _, p in pairs:
        if p not in slice_of:
            if in_slice >= size:
                slices.append([])
                size, in_slice = min(2 * size, chunk_pairs), 0
            slice_of[p] = len(slices) - 1
            slices[-1].append(p)
            in_slice += 1
    members: list[list[int]] = [[] for _ in slices]
    for j, (q, p) in enumerate(pairs):
        members[max(slice_of[q], slice_of[p])].append(j)
    return list(zip(slices, members, strict=True))
