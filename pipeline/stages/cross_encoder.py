"""Cross-encoder reranking: rescores the top-N candidates of any first stage.

The model is a sentence-transformers ``CrossEncoder`` folder (BERT encoder, mean pooling,
a linear head; ``CrossEncoder(folder).predict`` gives the same scores) trained by
``python -m training cross-encoder``. Inference here skips sentence-transformers:

* **truncation policy**: the query keeps at most ``query_max_tokens`` word pieces; the
  passage (``title + " " + text``) fills the rest up to ``max_length`` including
  ``[CLS] query [SEP] passage [SEP]``. Training uses the same function (:func:`pair_token_ids`).
* **batching**: pairs are sorted by length and cut into batches of at most ``batch_size``
  pairs and ``batch_tokens`` padded tokens, so short pairs do not pay for long ones (defaults:
  8 pairs on a CPU, where small batches ran 1.2-1.3x faster than 32-64; 512 on a GPU).
* **forward pass**: :mod:`pipeline.scorers.fast_bert` (fused QKV, no host sync per batch, same scores);
  ``fast=False`` or a non-BERT encoder runs the ``transformers`` module.
* **precision**: ``auto`` runs bf16 on a GPU and on a CPU with native bf16 (AVX512-BF16/AMX,
  :func:`cpu_has_fast_bf16`, measured once), else fp32; ``fp32``, ``bf16`` or ``int8`` force one. ``int8`` is
  the CPU path: every encoder ``nn.Linear`` in W8A8 (int8 weights per output channel, activations
  quantized per token at run time, int32 products; :mod:`pipeline.scorers.int8_linear`), the head in fp32.
  Not chosen by ``auto`` (see :func:`default_precision`).
* **service**: concurrent requests share forward passes through a
  :class:`~pipeline.runtime.micro_batch.MicroBatcher` (each request tokenizes its own pairs first, in its
  own thread); ``time_budget_ms`` (per query of the batch) raises :class:`RerankTimeoutError`, and
  with ``fail_open: true`` the pipeline then keeps the first-stage order and reports the stage as
  ``degraded``.

Each hit keeps the first-stage scores and adds this stage's in ``hit.stage_scores``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from pipeline.core.build_context import BuildContext, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.errors import IndexNotFoundError, ModelNotFoundError, StageError
from pipeline.core.stage import Stage, phase
from pipeline.core.types import Hit, Query, Results, sort_hits
from pipeline.runtime.cpu_memory import keep_freed_memory
from pipeline.runtime.micro_batch import MicroBatcher
from pipeline.runtime.tokenize_worker import TokenizerProcess, split_flat, tokenize_flat
from pipeline.scorers.fast_bert import fast_bert_scorer, masked_mean
from pipeline.scorers.fast_bert import supports as supports_fast
from pipeline.stages.fusion import interpolate_hits

logger = logging.getLogger(__name__)

BUILD_COMMAND = "python -m training cross-encoder train --help  (see models/ce-minilm/MODEL_CARD.md)"


class RerankTimeoutError(StageError):
    """The reranker did not finish within its time budget."""


# ---------------------------------------------------------------- truncation and padding


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
        width = _round_up(lengths[current[0]] if current else lengths[i], multiple)
        if current and (len(current) >= batch_size or (len(current) + 1) * width > batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def passage_text(title: str, text: str) -> str:
    return f"{title} {text}".strip() if title else text


# ---------------------------------------------------------------- the model


class CrossEncoderScorer:
    """Loads a trained cross-encoder folder and scores ``(query, passage)`` pairs.

    Example::

        scorer = CrossEncoderScorer(Path("models/ce-minilm"), device="cpu", precision="int8")
        scorer.score([("what is bm25", "BM25 is a ranking function ...")])   # -> [2.31]
    """

    def __init__(self, folder: Path, device: str = "auto", precision: str = "auto", max_length: int = 384,
                 query_max_tokens: int = 64, batch_size: int | None = None, batch_tokens: int | None = None,
                 threads: int | None = None, compile: bool = False, chunk_pairs: int = 1024,
                 attn_implementation: str | None = None, pad_multiple: int = 8, first_slice: int = 128,
                 fast: bool = True, tokenize_process: bool = True, slices_ahead: int = 1, run_ahead: int = 0):
        folder = Path(folder)
        if not (folder / "config.json").is_file() or not (folder / "2_Dense" / "model.safetensors").is_file():
            raise ModelNotFoundError(f"no trained cross-encoder at {folder}: build it with {BUILD_COMMAND}")
        try:
            import torch
            from safetensors.torch import load_file
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - core dependencies
            raise ImportError(f"the cross-encoder stage needs torch and transformers: pip install -e . ({exc})") from exc
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text()).get("pooling_mode", "mean")
        if pooling != "mean":
            raise ModelNotFoundError(f"{folder}: pooling {pooling!r} is not supported (expected mean)")
        self.torch = torch
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if precision == "auto":
            precision = default_precision(self.device)
        if precision == "int8" and not self.device.startswith("cpu"):
            raise ValueError("the int8 path runs on the CPU; use bf16 or fp32 on a GPU")
        self.precision_note = ""
        if precision == "int8" and (speedup := cpu_int8_speedup()) < INT8_MIN_SPEEDUP:
            self.precision_note = (f"int8 asked for, fp32 used: int8 products ran {speedup:.2f}x fp32 on this CPU "
                                   f"({torch.backends.cpu.get_cpu_capability()})")
            logger.warning("cross-encoder %s: %s", folder, self.precision_note)
            precision = "fp32"  # the scores int8 approximates, and here the faster path
        if self.device == "cpu":
            keep_freed_memory()  # no page faults on every batch's activations (pipeline/runtime/cpu_memory.py)
            if threads:
                torch.set_num_threads(threads)
        self.precision, self.max_length, self.query_max_tokens = precision, max_length, query_max_tokens
        batch_size = batch_size or default_batch_size(self.device)  # 8 on a CPU, 512 on a GPU
        self.batch_size, self.batch_tokens, self.chunk_pairs = batch_size, batch_tokens or batch_size * 512, chunk_pairs
        self.first_slice = max(1, min(first_slice, chunk_pairs))  # tokenization slices grow from this to chunk_pairs
        self.pad_multiple = pad_multiple  # padded widths are multiples of this (fewer shapes to compile)
        # GPU pipelining knobs (benchmarks/ce_e2e_variants.py): tokenization slices handed to the tokenizer
        # before the first is needed (0: all of them), and forward passes queued on the GPU before the
        # launching thread waits on an event, which releases the GIL (0: no limit)
        self.slices_ahead, self.run_ahead = slices_ahead, run_ahead
        self.pipelined = self.device != "cpu"  # tokenization overlapped with forward passes (see score)
        self.tokenize_process = tokenize_process  # pipelined slices tokenized in a child process (tokenize_worker.py)
        self._worker: TokenizerProcess | None = None
        self._worker_failed = False
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._backend = self._truncating_backend(self.tokenizer, max_length)
        if self.pipelined and tokenize_process and self._backend is not None:
            self._start_worker()  # now, so that the first request does not wait for the child to start
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        encoder = AutoModel.from_pretrained(str(folder), dtype=torch.float32, **extra)
        head = torch.nn.Linear(encoder.config.hidden_size, 1)
        head.load_state_dict({k.removeprefix("linear."): v.float() for k, v in load_file(str(folder / "2_Dense" / "model.safetensors")).items()})
        if fast and attn_implementation in (None, "sdpa") and supports_fast(encoder.config):
            model = fast_bert_scorer(encoder, head).eval()  # same scores, no host sync per batch (pipeline/scorers/fast_bert.py)
        else:
            model = mean_pool_scorer(encoder, head).eval()
        if precision == "int8":
            from pipeline.scorers.int8_linear import quantize_linears

            quantize_linears(model, keep=lambda name: name == "head")  # per-token W8A8 (pipeline/scorers/int8_linear.py)
        elif precision == "bf16":
            model = model.to(torch.bfloat16)
        self.model = model.to(self.device)
        if compile:
            self.model = torch.compile(self.model, dynamic=True)
        self.folder = folder
        self._lock = threading.Lock()  # one forward at a time per model (CPU threads are shared anyway)

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(query ids, passage ids)`` per pair, already cut by the truncation policy (see
        :func:`pair_token_ids`); each distinct text is tokenized once, in one parallel batch call."""
        texts = list(dict.fromkeys([q for q, _ in pairs] + [p for _, p in pairs]))
        return self._pairs_from(pairs, self._tokenize(texts))

    @staticmethod
    def _truncating_backend(tokenizer, max_length: int):
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

    def _tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if self._backend is not None:  # the same routine as the child process (pipeline/runtime/tokenize_worker.py)
            return split_flat(texts, *tokenize_flat(texts, self._backend))
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]
        return {t: np.asarray(i, dtype=np.int64) for t, i in zip(texts, ids, strict=True)}

    def _pairs_from(self, pairs: Sequence[tuple[str, str]], table: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for q, p in pairs:
            q_ids = table[q][: self.query_max_tokens]
            out.append((q_ids, table[p][: max(self.max_length - len(q_ids) - 3, 0)]))
        return out

    def _batch_arrays(self, rows: Sequence[tuple[np.ndarray, np.ndarray]], multiple: int = 8):
        """``[CLS] q [SEP] p [SEP]`` rows padded into ``(ids, types, mask)`` int64 arrays."""
        q_len = np.fromiter((len(q) for q, _ in rows), dtype=np.int64, count=len(rows))
        n = q_len + np.fromiter((len(p) for _, p in rows), dtype=np.int64, count=len(rows)) + 3
        width = _round_up(int(n.max()), multiple)
        ids = np.full((len(rows), width), self.tokenizer.pad_token_id, dtype=np.int64)
        ids[:, 0] = self.tokenizer.cls_token_id
        sep = self.tokenizer.sep_token_id
        for r, (q, p) in enumerate(rows):
            a = len(q)
            ids[r, 1 : 1 + a] = q
            ids[r, 1 + a] = sep
            ids[r, 2 + a : 2 + a + len(p)] = p
            ids[r, 2 + a + len(p)] = sep
        col = np.arange(width)[None, :]
        mask = col < n[:, None]
        types = (col >= (q_len + 2)[:, None]) & mask
        return ids, types.astype(np.int64), mask.astype(np.int64)

    def warm_up(self) -> float:
        """Run one small batch (two pairs of different lengths: no size-1 specialization) so that
        ``torch.compile`` compiles now rather than on the first request; returns the seconds it took.

        If compilation fails (on a CPU it needs a C++ compiler), the scorer goes on with the eager
        model, records why in ``precision_note`` and logs a warning."""
        start = time.perf_counter()
        pairs = [("warm up", "a short passage"), ("a longer warm up query", "a passage of a few more words " * 8)]
        try:
            self.score(pairs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back to the eager module
            eager = getattr(self.model, "_orig_mod", None)
            if eager is None:
                raise
            self.model = eager
            note = f"compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}), eager used"
            self.precision_note = "; ".join(filter(None, [self.precision_note, note]))
            logger.warning("cross-encoder %s: %s", self.folder, note)
            self.score(pairs)
        return time.perf_counter() - start

    def score(self, pairs: Sequence[tuple[str, str]], deadline: float | None = None) -> list[float]:
        """One score per pair (higher is more relevant). ``deadline``: a ``time.monotonic()`` value.

        On a GPU, inputs of more than ``first_slice`` pairs are pipelined: the distinct texts (in
        order of first use) are tokenized slice by slice in the background, and the pairs whose
        texts are all tokenized run on the GPU while the next slice is tokenized; no host sync
        until the end. Slices start small (``first_slice`` texts, so the GPU starts early) and
        double up to ``chunk_pairs``. Each distinct text is tokenized once (a passage shared by
        many queries, too), in a child process unless ``tokenize_process=False`` (a helper thread
        holding the GIL would stall the thread that queues GPU work; see pipeline/runtime/tokenize_worker.py).
        """
        if not pairs:
            return []
        pairs = list(pairs)
        if not self.pipelined or len(pairs) <= self.first_slice:
            return self.score_encoded(self.encode(pairs), deadline)
        chunks = self._ready_chunks(pairs)
        pending = []
        ahead = self.slices_ahead if self.slices_ahead > 0 else len(chunks)
        with ThreadPoolExecutor(1) as pool, self._lock:
            table: dict[str, np.ndarray] = {}
            futures = [self._submit(pool, texts) for texts, _ in chunks[:ahead]]
            for i, (texts, members) in enumerate(chunks):
                table.update(self._result(futures[i], texts))
                if i + ahead < len(chunks):
                    futures.append(self._submit(pool, chunks[i + ahead][0]))
                if members:
                    encoded = self._pairs_from([pairs[j] for j in members], table)
                    pending.append((members, self._launch(encoded, deadline)))
            out = [0.0] * len(pairs)
            for members, launched in pending:
                for j, score in zip(members, self._collect(len(members), launched), strict=True):
                    out[j] = score
        return out

    def _submit(self, pool: ThreadPoolExecutor, texts: list[str]) -> Future:
        """Tokenize a slice in the child process (started on first use), else in ``pool``'s thread."""
        if self.tokenize_process and self._backend is not None and not self._worker_failed:
            return (self._worker or self._start_worker()).submit(texts)
        return pool.submit(self._tokenize, texts)

    def _start_worker(self) -> TokenizerProcess:
        self._worker = TokenizerProcess(self._backend.to_str())
        weakref.finalize(self, self._worker.close)
        return self._worker

    def _result(self, future: Future, texts: list[str]) -> dict[str, np.ndarray]:
        try:
            return future.result()
        except (BrokenProcessPool, OSError) as exc:  # the child died: tokenize here from now on
            logger.warning("tokenizer process failed (%s); tokenizing in this process", exc)
            self._worker_failed = True
            return self._tokenize(texts)

    def _ready_chunks(self, pairs: list[tuple[str, str]]) -> list[tuple[list[str], list[int]]]:
        """``(texts to tokenize, pairs ready once they are)`` per slice of distinct texts: every query in
        the first slice (few and short), with the first ``first_slice`` passages; then the passages in order
        of first use, twice as many each slice, at most ``chunk_pairs``. Every pair lands in the slice of
        its passage, so pairs become ready as evenly as the passages are tokenized. (With the queries in
        order of first use too, the pairs of late queries waited for the last slices: 70% of the SciFact
        test pairs became ready in the last two of eight, and the GPU idled until then.)"""
        queries = list(dict.fromkeys(q for q, _ in pairs))
        slice_of: dict[str, int] = dict.fromkeys(queries, 0)
        slices: list[list[str]] = [list(queries)]
        size, in_slice = self.first_slice, 0
        for _, p in pairs:
            if p not in slice_of:
                if in_slice >= size:
                    slices.append([])
                    size, in_slice = min(2 * size, self.chunk_pairs), 0
                slice_of[p] = len(slices) - 1
                slices[-1].append(p)
                in_slice += 1
        members: list[list[int]] = [[] for _ in slices]
        for j, (q, p) in enumerate(pairs):
            members[max(slice_of[q], slice_of[p])].append(j)
        return list(zip(slices, members, strict=True))

    def score_encoded(self, encoded: Sequence[tuple[np.ndarray, np.ndarray]], deadline: float | None = None) -> list[float]:
        with self._lock:
            return self._collect(len(encoded), self._launch(encoded, deadline))

    def _launch(self, encoded, deadline: float | None):
        """Run the forward passes (length-sorted batches); outputs stay on the device."""
        torch = self.torch
        batches = length_batches([len(q) + len(p) + 3 for q, p in encoded], self.batch_size, self.batch_tokens,
                                 self.pad_multiple)
        outputs, queued = [], []
        with torch.inference_mode():
            for batch in batches:
                if self.run_ahead and self.device != "cpu" and len(queued) >= self.run_ahead:
                    queued.pop(0).synchronize()  # waits without the GIL: the tokenizer's feeder threads run
                if deadline is not None and time.monotonic() > deadline:
                    raise RerankTimeoutError(f"reranking ran past its time budget after {len(outputs)}/{len(batches)} batches")
                tensors = [torch.from_numpy(a) for a in self._batch_arrays([encoded[i] for i in batch], self.pad_multiple)]
                if self.device != "cpu":
                    tensors = [t.pin_memory().to(self.device, non_blocking=True) for t in tensors]
                out = self.model(*tensors)
                # on a CPU nothing is gained by deferring: keep Python floats, not one small tensor per batch,
                # which left glibc's heap fragmented (1.56 vs 0.83 GiB after 2,000 int8 pairs in one call)
                outputs.append((batch, out.float().tolist() if self.device == "cpu" else out))
                if self.run_ahead and self.device != "cpu":
                    queued.append(torch.cuda.Event())
                    queued[-1].record(torch.cuda.current_stream(self.device))
        return outputs

    def _collect(self, n: int, outputs) -> list[float]:
        scores = [0.0] * n
        if not outputs:
            return scores
        if isinstance(outputs[0][1], list):  # CPU: already floats
            flat = [s for _, out in outputs for s in out]
        else:
            flat = self.torch.cat([out.float() for _, out in outputs]).cpu().tolist()  # one host sync
        order = [i for batch, _ in outputs for i in batch]
        for i, s in zip(order, flat, strict=True):
            scores[i] = s
        return scores


def default_precision(device: str) -> str:
    """``precision: auto``: bf16 on a GPU or a CPU with native bf16, else fp32.

    int8 is never the default. Torch's dynamic quantization lost 0.036-0.110 nDCG@10 (one activation
    scale per batch); the per-token W8A8 path that replaced it (:mod:`pipeline.scorers.int8_linear`) runs
    1.94x ``CrossEncoder.predict`` and lost 0.001 on 20 SciFact test queries, but 0.0075 on the
    regression matrix's bm25>>ce (50 queries; eval/results/2026-11-28-ce-cpu-w8a8).
    """
    return "bf16" if device.startswith("cuda") or cpu_has_fast_bf16() else "fp32"


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether bf16 matrix products are clearly faster than fp32 on this CPU: oneDNN bf16 support,
    AVX512, and a measured :func:`cpu_bf16_speedup` of at least 1.3 (checked once per process).

    There bf16 is both faster than int8 dynamic quantization and lossless for ranking (measured
    on SciFact: score correlation with fp32 0.99996, 2.2x fp32 speed, vs 0.90-0.95 and 1.7x for
    int8). The instruction-set flags alone are not enough: a 2-core Xeon that reports AVX512-BF16
    (2026-11-28 night) ran the bf16 scorer at 0.78x its fp32 speed. Elsewhere ``precision: auto``
    falls back to fp32 (see :func:`default_precision`).
    """
    import torch

    try:
        native = (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                  and "AVX512" in torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch builds
        return False
    return bool(native) and cpu_bf16_speedup() >= 1.3


def cpu_bf16_speedup(repeats: int = 5) -> float:
    """fp32 time / bf16 time of one cross-encoder-sized product (2,048 x 384 by 384 x 1,536; best of ``repeats``)."""
    import torch

    x, w = torch.randn(2048, 384), torch.randn(1536, 384)
    xb, wb = x.bfloat16(), w.bfloat16()
    return (best_time(lambda: torch.nn.functional.linear(x, w), repeats)
            / best_time(lambda: torch.nn.functional.linear(xb, wb), repeats))


def best_time(fn, repeats: int) -> float:
    """Shortest of ``repeats`` timed calls of ``fn`` after one warm-up call (oneDNN primitive creation)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


INT8_MIN_SPEEDUP = 1.5
"""``precision: int8`` runs int8 only where its products measured at least this much faster than fp32's."""


@functools.cache
def cpu_int8_speedup(repeats: int = 3) -> float:
    """fp32 time / int8 time of one cross-encoder-sized product (512 x 384 by 384 x 1,536; best of ``repeats``),
    the int8 one through ``torch._int_mm`` as :class:`pipeline.scorers.int8_linear.Int8Linear` runs it; once per process.

    Where oneDNN has int8 kernels (VNNI) this is several times fp32; on a CPU with AVX2 only (an AMD
    EPYC, 2026-11-28) ``_int_mm`` fell back to a plain loop: 0.03-0.04x fp32, and the int8 scorer took
    191 s for 100 pairs against 7.6 s in fp32. The constructor then uses fp32 instead. 0.0 where this
    torch build has no CPU ``_int_mm`` at all.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-127, 128, (512, 384), dtype=torch.int8, generator=gen)
    w = torch.randint(-127, 128, (1536, 384), dtype=torch.int8, generator=gen)
    xf, wf = x.float(), w.float()
    try:
        int8 = best_time(lambda: torch._int_mm(x, w.t()), repeats)
    except (AttributeError, RuntimeError, NotImplementedError):  # pragma: no cover - torch builds without it
        return 0.0
    return best_time(lambda: torch.nn.functional.linear(xf, wf), repeats) / int8


def pad_pairs(rows, pad_id: int, torch, device: str, multiple: int = 8):
    """``(ids, types, mask)`` long tensors of encoded pairs, padded to a multiple of ``multiple``."""
    width = _round_up(max(len(ids) for ids, _ in rows), multiple)
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


@functools.cache
def _mean_pool_scorer_class():
    import torch

    class MeanPoolScorer(torch.nn.Module):
        """BERT encoder, masked mean pooling, linear head: one logit per pair."""

        def __init__(self, encoder, head):
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, input_ids, token_type_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, token_type_ids=token_type_ids,
                                  attention_mask=attention_mask).last_hidden_state
            return self.head(masked_mean(hidden, attention_mask)).squeeze(-1)

    return MeanPoolScorer


def mean_pool_scorer(encoder, head):
    """The scoring module (a ``torch.nn.Module``) shared by inference and training."""
    return _mean_pool_scorer_class()(encoder, head)


# ---------------------------------------------------------------- the stage


class CrossEncoderConfig(StageConfig):
    type: str = "cross_encoder"
    model: str = "ce-minilm"
    """Folder under the models directory (``$SEARCH_MODELS_DIR``), or a path."""
    top_n: int = Field(default=100, ge=1, le=1000)
    max_length: int = Field(default=384, ge=16, le=512)
    query_max_tokens: int = Field(default=64, ge=1, le=256)
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    """Pairs per forward pass; None: 8 on a CPU (small length-sorted batches ran 1.2-1.3x faster there than 32-64,
    2026-11-28), 512 on a GPU (the measured H200 configuration)."""
    batch_tokens: int | None = Field(default=None, ge=512)
    """Padded tokens per forward pass at most; None: ``batch_size`` x 512."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    threads: int | None = Field(default=None, ge=1, le=256)
    compile: bool = False
    """``torch.compile`` the forward pass, at load time (the stage warms it up): on an H200 +9-15% end to end
    (README, GPU throughput); on a CPU with VNNI, int8 1.2-1.26x faster than eager (3.1x ``CrossEncoder.predict``,
    eval/results/2026-11-28-ce-cpu-zen4) after about 30 s of compilation; needs a C++ compiler on a CPU."""
    pad_multiple: int = Field(default=8, ge=1, le=512)
    """Padded widths are multiples of this (64 with ``compile``: fewer shapes to compile)."""
    time_budget_ms: float | None = Field(default=None, gt=0)
    """Per query of the batch; past it the stage raises (and fails open if ``fail_open``)."""
    micro_batch: bool = True
    micro_batch_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    micro_batch_max_pairs: int = Field(default=1024, ge=1)
    interpolate: float | None = Field(default=None, ge=0.0, le=1.0)
    """``alpha``: final = alpha * minmax(reranker) + (1 - alpha) * minmax(incoming score), per query over the
    reranked candidates (None: the reranker alone). Tune it on a dev split:
    ``python -m training cross-encoder interpolate``."""


class CrossEncoderReranker(Stage):
    """Rerank the top ``top_n`` candidates of each query with a :class:`CrossEncoderScorer`.

    Example::

        ce = CrossEncoderReranker(scorer, docs=docstore, top_n=100)
        pipeline = (bm25 % 100) >> ce
    """

    name = "ce"
    needs_candidates = True

    def __init__(self, scorer: CrossEncoderScorer, docs, top_n: int = 100, time_budget_ms: float | None = None,
                 batcher: MicroBatcher | None = None, interpolate: float | None = None):
        if interpolate is not None and not 0.0 <= interpolate <= 1.0:
            raise ValueError(f"interpolate must be in [0, 1], got {interpolate}")
        self.scorer, self.docs, self.top_n = scorer, docs, top_n
        self.time_budget_ms, self.batcher, self.interpolate = time_budget_ms, batcher, interpolate

    def notes(self) -> list[str]:
        note = getattr(self.scorer, "precision_note", "")
        return [f"{self.name}: {note}"] if note else []

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        candidates = candidates or {}
        heads = {q.query_id: candidates.get(q.query_id, [])[: self.top_n] for q in queries}
        with phase("docs"):
            texts = self.docs.get_many(sorted({h.doc_id for hits in heads.values() for h in hits}))
        pairs, owners = [], []
        for q in queries:
            for hit in heads[q.query_id]:
                doc = texts.get(hit.doc_id)
                pairs.append((q.text, passage_text(doc.title, doc.text) if doc else ""))
                owners.append(hit)
        budget = self.time_budget_ms * max(len(queries), 1) / 1000 if self.time_budget_ms else None
        scores = self._score(pairs, budget)
        out: Results = {q.query_id: [] for q in queries}
        for hit, score in zip(owners, scores, strict=True):
            out[hit.query_id].append(hit.rescored(self.name, float(score)))
        return {qid: sort_hits(self._mix(hits, heads[qid])) for qid, hits in out.items()}

    def _mix(self, reranked: list[Hit], incoming: list[Hit]) -> list[Hit]:
        """With ``interpolate``: the per-query blend of reranker and first-stage scores (raw logit kept under ``ce``)."""
        if self.interpolate is None or not reranked:
            return reranked
        return interpolate_hits(reranked, incoming, self.interpolate, f"{self.name}_interpolated")

    def score_texts(self, query: Query, documents: Sequence) -> list[float]:
        """Scores of caller-supplied documents (``title``/``text``), in order (the service's ``/rerank``)."""
        pairs = [(query.text, passage_text(d.title, d.text)) for d in documents]
        budget = self.time_budget_ms / 1000 if self.time_budget_ms else None
        return [float(s) for s in self._score(pairs, budget)]

    def _score(self, pairs: list[tuple[str, str]], budget_s: float | None) -> list[float]:
        if not pairs:
            return []
        if self.batcher is None:
            deadline = time.monotonic() + budget_s if budget_s else None
            return self.scorer.score(pairs, deadline=deadline)
        # Each request tokenizes its own pairs in its own thread (the tokenizer releases the GIL, so
        # concurrent requests tokenize in parallel); the batch they share holds only forward passes.
        start = time.monotonic()
        with phase("tokenize"):
            encoded = self.scorer.encode(pairs)
        timeout = budget_s - (time.monotonic() - start) if budget_s else None
        try:
            if timeout is not None and timeout <= 0:
                raise TimeoutError("the time budget went on tokenization")
            with phase("batched_forward"):  # waiting for the shared batch, then its forward passes
                return self.batcher(encoded, timeout=timeout)
        except TimeoutError as exc:
            raise RerankTimeoutError(f"reranking {len(pairs)} pairs took over {budget_s:.2f} s: {exc}") from exc


def default_batch_size(device: str) -> int:
    """``batch_size: null``: 512 on a GPU, 8 on a CPU (``device`` as resolved by the scorer)."""
    return 512 if device.startswith("cuda") else 8


def _docstore_path(ctx: BuildContext) -> Path:
    """The collection's document store, published with its indexes (the current version's file)."""
    from pipeline.storage.docstore import FILENAME
    from pipeline.storage.index_store import index_dir

    for name in ctx.config.indexes:
        path = (index_dir(ctx.index_root, ctx.collection, name) / "current").resolve() / FILENAME
        if path.is_file():
            return path
    raise IndexNotFoundError(f"no document store for collection {ctx.collection!r} under {ctx.index_root}: "
                             f"run `python -m indexer build --dataset <dir>` first")


def _build(cfg: CrossEncoderConfig, ctx: BuildContext) -> CrossEncoderReranker:
    folder = Path(cfg.model) if os.path.isabs(cfg.model) else Path(ctx.models_dir) / cfg.model
    device = cfg.device if cfg.device != "auto" else (ctx.device or "auto")
    key = ("cross_encoder", str(folder.resolve()), device, cfg.precision, cfg.max_length, cfg.query_max_tokens,
           cfg.batch_size, cfg.batch_tokens, cfg.compile, cfg.pad_multiple)

    def load():
        scorer = CrossEncoderScorer(folder, device=device, precision=cfg.precision, max_length=cfg.max_length,
                                    query_max_tokens=cfg.query_max_tokens, batch_size=cfg.batch_size,
                                    batch_tokens=cfg.batch_tokens, threads=cfg.threads, compile=cfg.compile,
                                    pad_multiple=cfg.pad_multiple)
        if cfg.compile:  # compile at load (tens of seconds on a CPU), not inside the first request's time budget
            logger.info("cross-encoder %s compiled in %.1f s", folder, scorer.warm_up())
        batcher = MicroBatcher(scorer.score_encoded, max_items=cfg.micro_batch_max_pairs, max_wait_ms=cfg.micro_batch_wait_ms,
                               name=f"ce-batcher-{folder.name}")
        return scorer, batcher

    scorer, batcher = ctx.shared(key, load)  # one model and one batcher per process, shared by pipelines
    from pipeline.storage.docstore import DocStore

    path = _docstore_path(ctx)  # keyed by the versioned file: a reload to a new index version gets a new store
    docs = ctx.shared(("docstore", str(path)), lambda: DocStore(path))
    return CrossEncoderReranker(scorer, docs, top_n=cfg.top_n, time_budget_ms=cfg.time_budget_ms,
                                batcher=batcher if cfg.micro_batch else None, interpolate=cfg.interpolate)


register_stage("cross_encoder", CrossEncoderConfig, _build)
