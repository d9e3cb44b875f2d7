"""The cross-encoder scoring engine: ``(query, passage)`` texts in, one relevance score each out.

The model is a sentence-transformers ``CrossEncoder`` folder (BERT encoder, mean pooling,
a linear head; ``CrossEncoder(folder).predict`` gives the same scores) trained by
``python -m training cross-encoder``. Inference here skips sentence-transformers:

* **truncation policy**: :func:`pipeline.scorers.tokenization.pair_token_ids` (the query keeps at
  most ``query_max_tokens`` word pieces, the passage fills the rest up to ``max_length``); training
  uses the same function.
* **batching**: pairs are sorted by length and cut into batches of at most ``batch_size``
  pairs and ``batch_tokens`` padded tokens, so short pairs do not pay for long ones (defaults:
  8 pairs on a CPU, where small batches ran 1.2-1.3x faster than 32-64; 512 on a GPU).
* **forward pass**: :mod:`pipeline.scorers.fast_bert` (fused QKV, no host sync per batch, same scores);
  ``fast=False`` or a non-BERT encoder runs the ``transformers`` module. On a GPU, ``packing: on`` runs it
  padding-free: each batch one stream of real tokens, attention per pair (:mod:`pipeline.scorers.packing`,
  :mod:`pipeline.scorers.packed_bert`); ``auto`` (the default) packs on a GPU (after a load-time self-check; its
  rankings are as close to fp32 as the padded path's, results/2026-12-04-ce-packed); on a CPU always padded.
* **passage ids cache**: ``passage_cache`` texts' word pieces kept across calls (:mod:`pipeline.scorers.token_cache`;
  default 100,000 on a GPU, none on a CPU), so a query tokenizes only itself and the passages it has not seen.
* **precision**: ``auto`` runs bf16 on a GPU and on a CPU with native bf16 (AVX512-BF16/AMX,
  measured once: :mod:`pipeline.scorers.cpu_precision`), else fp32; ``fp32``, ``bf16``, ``fp16`` or ``int8`` force
  one. ``fp16`` is a GPU option (as fast as bf16 there, 8x finer rounding: rankings closer to fp32). The fast
  modules pool and apply the head in fp32 whatever the precision. ``int8`` is the CPU path: every encoder ``nn.Linear`` in W8A8 (:mod:`pipeline.scorers.int8_linear`),
  the head in fp32. Not chosen by ``auto`` (see :func:`~pipeline.scorers.cpu_precision.default_precision`).
* **format**: :mod:`pipeline.scorers.cross_encoder_folder` reads the folder; :meth:`CrossEncoderScorer.save`
  writes the model served (training writes through the same module).
* **service**: :class:`~pipeline.scorers.served.ServedScorer` adds a time budget and micro-batching
  of concurrent requests on top of this engine.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.core.errors import ModelNotFoundError, RerankTimeoutError
from pipeline.core.types import Query
from pipeline.runtime.memory import keep_freed_memory
from pipeline.runtime.tokenize_worker import TokenizerProcess, split_flat, tokenize_flat
from pipeline.scorers.base import PairScorer
from pipeline.scorers.cpu_precision import INT8_MIN_SPEEDUP, cpu_int8_speedup, default_batch_size, default_precision
from pipeline.scorers.cross_encoder_folder import (
    PROVENANCE,
    check_folder,
    mean_pool_scorer,
    read_encoder,
    read_head,
    read_module,
    stored_dtype,
    weights_stamp,
    write_module,
)
from pipeline.scorers.cross_encoder_options import CrossEncoderOptions
from pipeline.scorers.fast_bert import fast_bert_scorer, set_pruning
from pipeline.scorers.fast_bert import supports as supports_fast
from pipeline.scorers.packing import setup_packing
from pipeline.scorers.token_cache import TokenCache
from pipeline.scorers.tokenization import batch_arrays, length_batches, ready_slices, truncating_backend

logger = logging.getLogger(__name__)

BUILD_COMMAND = "python -m training cross-encoder train --help  (see models/ce-minilm/MODEL_CARD.md)"



class CrossEncoderScorer(PairScorer):
    """Loads a trained cross-encoder folder and scores ``(query, passage)`` pairs.

    Example::

        scorer = CrossEncoderScorer(Path("models/ce-minilm"), device="cpu", precision="int8")
        scorer.score("what is bm25", ["BM25 is a ranking function ..."])   # -> [2.31]
        scorer.score_pairs([("what is bm25", "BM25 is a ranking function ...")])  # the same, any pairs
    """

    def __init__(self, folder: Path, options: CrossEncoderOptions | None = None, **overrides):
        o = replace(options or CrossEncoderOptions(), **overrides)
        self.options = o
        device, precision, max_length, query_max_tokens = o.device, o.precision, o.max_length, o.query_max_tokens
        batch_size, batch_tokens, threads, chunk_pairs = o.batch_size, o.batch_tokens, o.threads, o.chunk_pairs
        attn_implementation, pad_multiple, first_slice, fast = o.attn_implementation, o.pad_multiple, o.first_slice, o.fast
        tokenize_process, slices_ahead, run_ahead = o.tokenize_process, o.slices_ahead, o.run_ahead
        folder = Path(folder)
        check_folder(folder, BUILD_COMMAND)  # the format: pipeline/scorers/cross_encoder_folder.py
        try:
            import torch
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - core dependencies
            raise ImportError(f"the cross-encoder stage needs torch and transformers: pip install -e . ({exc})") from exc
        self.torch = torch
        self._stamp = weights_stamp(folder)  # save() checks the folder still holds what was read
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
            keep_freed_memory()  # no page faults per batch, unless the service tamed the allocator (pipeline/runtime/memory.py)
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
        self._backend = truncating_backend(self.tokenizer, max_length)
        if self.pipelined and tokenize_process and self._backend is not None:
            self._start_worker()  # now, so that the first request does not wait for the child to start
        encoder = read_encoder(folder, attn_implementation)
        head = read_head(folder, encoder.config.hidden_size)
        is_fast = fast and attn_implementation in (None, "sdpa") and supports_fast(encoder.config)
        if is_fast:
            model = fast_bert_scorer(encoder, head).eval()  # same scores, no host sync per batch (pipeline/scorers/fast_bert.py)
        else:
            model = mean_pool_scorer(encoder, head).eval()
        if precision == "int8":
            from pipeline.scorers.int8_linear import quantize_linears

            quantize_linears(model, keep=lambda name: name == "head")  # per-token W8A8 (pipeline/scorers/int8_linear.py)
        elif precision in ("bf16", "fp16"):
            model = model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
        self.model = model.to(self.device)
        self.folder = folder
        cache_size = o.passage_cache if o.passage_cache is not None else (0 if self.device == "cpu" else 100_000)
        self.token_cache = TokenCache(cache_size)
        fast_module = self.model if is_fast and precision != "int8" else None
        self.pruning = set_pruning(fast_module, o.prune_layer, o.prune_keep, o.prune_min)
        self.packed, self.packing_note = setup_packing(self, fast_module)
        if o.compile:
            self.model = torch.compile(self.model, dynamic=True, mode=o.compile_mode)
        self._lock = threading.Lock()  # one forward at a time per model (CPU threads are shared anyway)

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(query ids, passage ids)`` per pair, already cut by the truncation policy (see
        :func:`pair_token_ids`); each distinct text is tokenized once, in one parallel batch call."""
        if not self.token_cache.capacity:
            texts = list(dict.fromkeys([q for q, _ in pairs] + [p for _, p in pairs]))
            return self._pairs_from(pairs, self._tokenize(texts))
        return self._encode_with(pairs, self.token_cache.get_many(dict.fromkeys(p for _, p in pairs)))

    def _encode_with(self, pairs: Sequence[tuple[str, str]], table: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`encode` given the passages already found in the token cache (``table``)."""
        texts = list(dict.fromkeys([q for q, _ in pairs] + [p for _, p in pairs]))
        missing = [t for t in texts if t not in table]
        table.update(self._cached(self._tokenize(missing) if missing else {}, pairs))
        return self._pairs_from(pairs, table)

    def cache_passages(self, passages: Sequence[str]) -> int:
        """Tokenize ``passages`` not yet cached into the passage ids cache now (e.g. a collection's documents when
        an index version is loaded), so that later queries tokenize only themselves; returns how many were new."""
        missing = [p for p in dict.fromkeys(passages) if p not in self.token_cache.get_many([p])]
        if self.token_cache.capacity and missing:
            self.token_cache.put_many(self._tokenize(missing))
        return len(missing) if self.token_cache.capacity else 0

    def _cached(self, table: dict[str, np.ndarray], pairs) -> dict[str, np.ndarray]:
        """``table`` (fresh ids), its passages kept in the token cache."""
        if self.token_cache.capacity and table:
            passages = {p for _, p in pairs}
            self.token_cache.put_many({t: ids for t, ids in table.items() if t in passages})
        return table

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
        tok = self.tokenizer
        return batch_arrays(rows, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, multiple)

    def warm_up(self) -> float:
        """Run one small batch (two pairs of different lengths: no size-1 specialization) so that
        ``torch.compile`` compiles now rather than on the first request; returns the seconds it took.

        If compilation fails (on a CPU it needs a C++ compiler), the scorer goes on with the eager
        model, records why in ``precision_note`` and logs a warning."""
        start = time.perf_counter()
        pairs = [("warm up", "a short passage"), ("a longer warm up query", "a passage of a few more words " * 8)]
        try:
            self.score_pairs(pairs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back to the eager modules
            eager = getattr(self.model, "_orig_mod", None)
            if eager is None:
                raise
            self.model = eager
            if self.packed is not None:
                self.packed.module = getattr(self.packed.module, "_orig_mod", self.packed.module)
            note = f"compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}), eager used"
            self.precision_note = "; ".join(filter(None, [self.precision_note, note]))
            logger.warning("cross-encoder %s: %s", self.folder, note)
            self.score_pairs(pairs)
        return time.perf_counter() - start

    def score_pairs(self, pairs: Sequence[tuple[str, str]], deadline: float | None = None) -> list[float]:
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
        table = self.token_cache.get_many(dict.fromkeys(p for _, p in pairs))  # {} without a cache
        if self._few_to_tokenize(pairs, table):  # e.g. cached passages: every batch full, no slices to wait for
            return self.score_encoded(self._encode_with(pairs, table), deadline)
        chunks = self._ready_chunks(pairs, table)
        pending = []
        ahead = self.slices_ahead if self.slices_ahead > 0 else len(chunks)
        with ThreadPoolExecutor(1) as pool, self._lock:
            futures = [self._submit(pool, texts) for texts, _ in chunks[:ahead]]
            for i, (texts, members) in enumerate(chunks):
                table.update(self._cached(self._result(futures[i], texts), pairs))
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

    @staticmethod
    def _few_to_tokenize(pairs: list[tuple[str, str]], table: dict) -> bool:
        """At most one text to tokenize per 8 pairs (the passages cached, the queries not): tokenizing them
        at once costs less than the partly filled batches of slice-by-slice pipelining (results/2026-12-04-ce-packed)."""
        missing = sum(1 for t in dict.fromkeys(t for pair in pairs for t in pair) if t not in table)
        return missing * 8 <= len(pairs)

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

    def _ready_chunks(self, pairs: list[tuple[str, str]], known=()) -> list[tuple[list[str], list[int]]]:
        """Tokenization slices and the pairs each makes ready (:func:`~pipeline.scorers.tokenization.ready_slices`)."""
        return ready_slices(pairs, self.first_slice, self.chunk_pairs, known)

    def score_encoded(self, encoded: Sequence[tuple[np.ndarray, np.ndarray]], deadline: float | None = None) -> list[float]:
        with self._lock:
            return self._collect(len(encoded), self._launch(encoded, deadline))

    def _launch(self, encoded, deadline: float | None):
        """Run the forward passes (packed, or length-sorted padded batches); outputs stay on the device."""
        if self.packed is not None:
            return self.packed.launch(self, encoded, deadline)
        return self._launch_padded(encoded, deadline)

    def _launch_padded(self, encoded, deadline: float | None):
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

    def score_batch(self, queries: Sequence[Query], passages: Sequence[Sequence[str]]) -> list[list[float]]:
        pairs = [(q.text, p) for q, ps in zip(queries, passages, strict=True) for p in ps]
        return split_scores(self.score_pairs(pairs), passages)

    def notes(self) -> list[str]:
        return [self.precision_note] if self.precision_note else []

    def fast_path(self) -> dict:
        """How this engine runs, for ``GET /pipelines``: device, precision, packed or padded, the token cache."""
        out = {"device": self.device, "precision": self.precision, "packing": self.packed is not None,
               "compile": (self.options.compile_mode or True) if self.options.compile else False, "passage_cache": self.token_cache.capacity}
        if self.pruning:
            out["token_pruning"] = self.pruning if self.packed is None else "off: the packed path reads every token"
        if self.packed is not None:
            out["attention"] = self.packed.kind
            if self.packed.module.gelu_epilogue:
                out["gelu"] = "epilogue (tanh)"
        elif self.packing_note:
            out["packing_note"] = self.packing_note
        return out

    def save(self, folder: Path, dtype: str | None = None) -> Path:
        """Write the model this scorer serves as a cross-encoder folder (the format it loads) and return it.

        The weights are the trained ones, as stored in the folder this scorer was loaded from (in their stored
        dtype unless ``dtype`` is given), not the in-memory inference module, which may be fused (the fast
        path), cast to bf16 or quantized to int8. A scorer built again from the saved folder with the same
        options gives the same scores. Raises :class:`ModelNotFoundError` if the source folder changed since
        it was read, ``ValueError`` for the source folder itself. ``MODEL_CARD.md`` and
        ``training_report.json`` are copied along.
        """
        folder = Path(folder)
        if folder.resolve() == self.folder.resolve():
            raise ValueError(f"{folder} is the folder this scorer was loaded from")
        if weights_stamp(self.folder) != self._stamp:
            raise ModelNotFoundError(f"{self.folder} changed since this scorer read it: load it again before saving")
        module, _ = read_module(self.folder)
        write_module(module, self.tokenizer, folder, dtype or stored_dtype(self.folder))
        for name in PROVENANCE:
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, folder / name)
        return folder


def split_scores(flat: Sequence[float], passages: Sequence[Sequence[str]]) -> list[list[float]]:
    """Flat per-pair scores cut back into one list per query."""
    out, start = [], 0
    for ps in passages:
        out.append([float(s) for s in flat[start : start + len(ps)]])
        start += len(ps)
    return out
