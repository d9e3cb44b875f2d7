"""Padding-free forward passes for BERT cross-encoders: the pairs of a batch packed into one token stream.

The padded path (:mod:`pipeline.scorers.fast_bert`) runs every projection and the FFN over ``batch x width``
tokens, pad tokens included, and attention with a key mask. Here a batch is one stream of ``T`` real tokens
(``[CLS] q [SEP] p [SEP]`` of each pair, back to back); the linear layers, LayerNorms and GELU see only real
tokens, and attention runs per pair over the stream's segments (``cu_seqlens``, as in flash-attention's
varlen API and ByteTransformer). Mean pooling sums each segment. Same parameters as the padded module.

Attention, the first available (:func:`attention_kind`):

* ``varlen``: ``torch.nn.attention.varlen.varlen_attn`` (flash kernels; CUDA, bf16/fp16; torch >= 2.9);
* ``nested``: ``scaled_dot_product_attention`` over nested jagged tensors (CUDA);
* ``reference``: one ``scaled_dot_product_attention`` call per pair (any device; the CPU test path, slow).

Example::

    packed = packed_bert_scorer(fast_module)       # a FastBertScorer (fast_bert.py): shares its parameters
    arrays = packed_arrays(rows, cls_id, sep_id)   # rows: (query ids, passage ids) per pair
    logits = packed(*to_device(arrays, "cuda"))
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from pipeline.scorers.fast_bert import head_fp32

MAX_SEQLEN_MULTIPLE = 64  # the max_seqlen handed to the kernels is rounded up to this (fewer compiled variants)


def attention_kind(device: str, dtype) -> str | None:
    """The variable-length attention this torch offers on ``device`` for ``dtype`` (see the module doc):
    ``varlen``, ``nested`` or ``reference``; None where only the padded path should run (a CUDA build
    without either kernel never happens in practice, so None is unused today but kept for the caller)."""
    import torch

    if not str(device).startswith("cuda"):
        return "reference"
    if dtype in (torch.bfloat16, torch.float16) and _varlen_attn() is not None:
        return "varlen"
    if hasattr(torch, "nested") and hasattr(torch.nested, "nested_tensor_from_jagged"):
        return "nested"
    return "reference"


@functools.cache
def _varlen_attn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def packed_arrays(rows: Sequence[tuple[np.ndarray, np.ndarray]], cls_id: int, sep_id: int):
    """``(tokens, cu_seqlens, max_seqlen)`` for already-cut ``(query ids, passage ids)`` rows:
    ``tokens`` an int32 ``(3, T)`` array of ids, token types and positions; ``cu_seqlens`` int32
    ``(B + 1,)`` segment starts and the end; ``max_seqlen`` the longest pair (a Python int: no host sync)."""
    q_len = np.fromiter((len(q) for q, _ in rows), dtype=np.int64, count=len(rows))
    lengths = q_len + np.fromiter((len(p) for _, p in rows), dtype=np.int64, count=len(rows)) + 3
    cu = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu[1:])
    total = int(cu[-1])
    cls, sep = np.array([cls_id], dtype=np.int32), np.array([sep_id], dtype=np.int32)
    pieces = []
    for q, p in rows:
        pieces += (cls, q, sep, p, sep)
    tokens = np.empty((3, total), dtype=np.int32)
    np.concatenate(pieces, out=tokens[0], casting="unsafe")
    positions = np.arange(total, dtype=np.int64) - np.repeat(cu[:-1], lengths)
    tokens[1] = positions >= np.repeat(q_len + 2, lengths)  # token type 1 from the passage on
    tokens[2] = positions
    return tokens, cu.astype(np.int32), int(lengths.max())


def to_device(arrays, device: str):
    """The tensors :class:`PackedBertScorer` takes, from :func:`packed_arrays` (pinned, copied without waiting)."""
    import torch

    tokens, cu, max_seqlen = arrays
    tokens, cu = torch.from_numpy(tokens), torch.from_numpy(cu)
    if not str(device).startswith("cpu"):
        tokens = tokens.pin_memory().to(device, non_blocking=True)
        cu = cu.pin_memory().to(device, non_blocking=True)
    return tokens, cu, max_seqlen


@functools.cache
def _classes():
    import torch
    import torch.nn.functional as F

    def attention(kind: str, q, k, v, cu, max_seqlen: int):
        """``(T, heads, dim)`` queries, keys and values of packed segments -> ``(T, heads, dim)``."""
        if kind == "varlen":
            return _varlen_attn()(q, k, v, cu, cu, max_seqlen, max_seqlen)
        if kind == "nested":
            offsets = cu.long()
            nested = [_jagged(x.contiguous(), offsets, max_seqlen).transpose(1, 2) for x in (q, k, v)]
            return F.scaled_dot_product_attention(*nested).transpose(1, 2).values()
        bounds = cu.tolist()  # reference: one pair at a time (a host sync; CPU tests and fallbacks only)
        out = torch.empty_like(q)
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            seg = [x[s:e].transpose(0, 1)[None] for x in (q, k, v)]
            out[s:e] = F.scaled_dot_product_attention(*seg)[0].transpose(0, 1)
        return out

    class PackedBertScorer(torch.nn.Module):
        """A :class:`~pipeline.scorers.fast_bert` module's parameters over a packed token stream."""

        def __init__(self, fast, kind: str, gelu_epilogue: bool = False):
            super().__init__()
            self.fast, self.kind, self.gelu_epilogue = fast, kind, gelu_epilogue
            self.heads = fast.layers[0].heads

        def forward(self, tokens, cu_seqlens, max_seqlen: int):
            f = self.fast
            ids, types, positions = tokens.long().unbind(0)
            x = f.emb_ln(f.word(ids) + f.token_type(types) + f.position(positions))
            t, h = x.shape
            for layer in f.layers:
                qkv = layer.qkv(x).view(t, 3, self.heads, h // self.heads)
                att = attention(self.kind, qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, max_seqlen)
                x = layer.ln1(x + layer.out(att.reshape(t, h)))
                if self.gelu_epilogue:  # bias + GELU (tanh form) inside the cuBLASLt product: no separate pass
                    inner = torch._addmm_activation(layer.ffn_in.bias, x, layer.ffn_in.weight.t(), use_gelu=True)
                else:
                    inner = F.gelu(layer.ffn_in(x))
                x = layer.ln2(x + layer.ffn_out(inner))
            return self.head_of_segments(x, cu_seqlens)

        def head_of_segments(self, x, cu_seqlens):
            """Mean of each segment's token vectors (summed in fp32), then the linear head in fp32: one logit per pair."""
            cu = cu_seqlens.long()
            lengths = cu[1:] - cu[:-1]
            segment = torch.repeat_interleave(torch.arange(lengths.shape[0], device=x.device), lengths,
                                              output_size=x.shape[0])
            sums = torch.zeros(lengths.shape[0], x.shape[1], dtype=torch.float32, device=x.device)
            sums.index_add_(0, segment, x.float())
            return head_fp32(self.fast.head, sums / lengths.clamp(min=1)[:, None]).squeeze(-1)

    return PackedBertScorer


def _jagged(x, offsets, max_seqlen: int):
    import torch

    try:
        return torch.nested.nested_tensor_from_jagged(x, offsets, min_seqlen=1, max_seqlen=max_seqlen)
    except TypeError:  # a torch without the seqlen hints (then it measures them: a host sync)
        return torch.nested.nested_tensor_from_jagged(x, offsets)


def packed_bert_scorer(fast, kind: str, gelu_epilogue: bool = False):
    """A padding-free module over ``fast`` (a FastBertScorer from :func:`pipeline.scorers.fast_bert.fast_bert_scorer`);
    ``kind``: the attention (:func:`attention_kind`; other kernels measured slower: benchmarks/attention_kernels.py);
    ``gelu_epilogue``: the FFN's bias and GELU in the first product's epilogue (tanh GELU: not bit-equal)."""
    return _classes()(fast, kind, gelu_epilogue)


def round_seqlen(n: int) -> int:
    return -(-n // MAX_SEQLEN_MULTIPLE) * MAX_SEQLEN_MULTIPLE


def token_batches(lengths: Sequence[int], batch_tokens: int, batch_size: int) -> list[list[int]]:
    """Consecutive indices grouped so that each group holds at most ``batch_tokens`` tokens (no padding
    to pay for, so no length sort) and ``batch_size`` pairs; a pair longer than the budget goes alone."""
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        if current and (used + n > batch_tokens or len(current) >= batch_size):
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        batches.append(current)
    return batches
