"""How :class:`~pipeline.scorers.cross_encoder.CrossEncoderScorer` runs a model folder: its engine options.

The ``cross_encoder`` stage config (:mod:`pipeline.stages.cross_encoder`) sets most of them; what each does is in
the scorer's module doc (precision, packing, the passage ids cache, compilation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class CrossEncoderOptions:
    """How the engine runs a model folder (the ``cross_encoder`` stage config sets most of these)."""

    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto"
    max_length: int = 384
    query_max_tokens: int = 64
    batch_size: int | None = None
    """Pairs per forward pass; None: 8 on a CPU, 512 on a GPU."""
    batch_tokens: int | None = None
    """Padded tokens per forward pass at most; None: ``batch_size`` x 512."""
    threads: int | None = None
    compile: bool = False
    chunk_pairs: int = 1024
    attn_implementation: str | None = None
    pad_multiple: int = 8
    first_slice: int = 128
    fast: bool = True
    tokenize_process: bool = True
    slices_ahead: int = 1
    run_ahead: int = 0
    packing: Literal["auto", "on", "off"] = "auto"
    """Padding-free forward passes (pipeline/scorers/packing.py): auto = on a CUDA device after a self-check, off on a CPU."""
    compile_mode: str | None = None
    """``torch.compile`` mode (None: the default; e.g. ``max-autotune-no-cudagraphs``: Triton matrix products
    with fused epilogues, minutes of autotuning at load; benchmarks/ce_packed.py measures it)."""
    packed_tokens: int = 131072
    """Real tokens per packed forward pass at most."""
    packed_attention: str | None = None
    """Force the packed path's attention (``varlen``, ``nested`` or ``reference``); None: the first that this torch
    offers and that passes the self-check (other kernels were slower: benchmarks/attention_kernels.py)."""
    packed_gelu_epilogue: bool | None = None
    """Packed path: the FFN's bias + GELU inside the matrix product (cuBLASLt epilogue, tanh GELU); None: on a GPU."""
    passage_cache: int | None = None
    """Passages whose token ids are kept across calls (LRU); None: 100,000 on a GPU, 0 on a CPU."""
    prune_layer: int | None = None
    """Token pruning on the padded path (the CPU's): from this encoder layer on only the query segment and the
    ``prune_keep`` share of the passage tokens that the query attends to most go on (pipeline/scorers/fast_bert.py
    ``prune_tokens``); None: off."""
    prune_keep: float = 1.0
    prune_min: int = 0
    """Passage tokens never pruned below this count (a short passage is read whole)."""
