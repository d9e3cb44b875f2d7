"""A :class:`~pipeline.scorers.cross_encoder.CrossEncoderScorer` behind the service's limits.

* **time budget**: ``time_budget_ms`` per query of a batch; past it :class:`RerankTimeoutError`
  (a ``fail_open`` stage then keeps the first-stage order and reports itself ``degraded``).
* **micro-batching**: concurrent requests share forward passes through a
  :class:`~pipeline.runtime.micro_batch.MicroBatcher`; each request tokenizes its own pairs
  first, in its own thread (the tokenizer releases the GIL), so the shared batch holds only
  forward passes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from pipeline.core.errors import RerankTimeoutError
from pipeline.core.stage import phase
from pipeline.core.types import Query
from pipeline.runtime.micro_batch import MicroBatcher
from pipeline.scorers.base import PairScorer
from pipeline.scorers.cross_encoder import CrossEncoderScorer, split_scores


class ServedScorer(PairScorer):
    """The engine with a per-query time budget and, optionally, a shared micro-batcher.

    Example::

        engine = CrossEncoderScorer(Path("models/ce-minilm"))
        batcher = MicroBatcher(engine.score_encoded, max_items=1024, max_wait_ms=2.0)
        scorer = ServedScorer(engine, batcher, time_budget_ms=30_000)
        scorer.score("what is bm25", ["BM25 is a ranking function"])
    """

    def __init__(self, engine: CrossEncoderScorer, batcher: MicroBatcher | None = None,
                 time_budget_ms: float | None = None):
        self.engine, self.batcher, self.time_budget_ms = engine, batcher, time_budget_ms

    def notes(self) -> list[str]:
        return self.engine.notes()

    def fast_path(self) -> dict | None:
        return self.engine.fast_path()

    def save(self, folder: Path, dtype: str | None = None) -> Path:
        """The engine's model (:meth:`CrossEncoderScorer.save`); the time budget and batcher are settings, not model."""
        return self.engine.save(folder, dtype)

    def score_batch(self, queries: Sequence[Query], passages: Sequence[Sequence[str]]) -> list[list[float]]:
        pairs = [(q.text, p) for q, ps in zip(queries, passages, strict=True) for p in ps]
        budget = self.time_budget_ms * max(len(queries), 1) / 1000 if self.time_budget_ms else None
        return split_scores(self.score_pairs(pairs, budget), passages)

    def score_pairs(self, pairs: list[tuple[str, str]], budget_s: float | None) -> list[float]:
        if not pairs:
            return []
        if self.batcher is None:
            deadline = time.monotonic() + budget_s if budget_s else None
            return self.engine.score_pairs(pairs, deadline=deadline)
        start = time.monotonic()
        with phase("tokenize"):
            encoded = self.engine.encode(pairs)
        timeout = budget_s - (time.monotonic() - start) if budget_s else None
        try:
            if timeout is not None and timeout <= 0:
                raise TimeoutError("the time budget went on tokenization")
            with phase("batched_forward"):  # waiting for the shared batch, then its forward passes
                return self.batcher(encoded, timeout=timeout)
        except TimeoutError as exc:
            raise RerankTimeoutError(f"reranking {len(pairs)} pairs took over {budget_s:.2f} s: {exc}") from exc
