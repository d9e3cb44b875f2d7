"""Hybrid retrieval: fuse the rankings of several retrievers into one.

Methods:

- ``rrf``: reciprocal rank fusion, ``score(d) = sum_i w_i / (k + rank_i(d))`` (Cormack et al.
  2009; ``k`` defaults to 60);
- ``linear``: normalised score interpolation, ``score(d) = sum_i w_i * norm_i(s_i(d))`` with
  min-max (or z-score) normalisation per query and retriever; a document a retriever did not
  return gets that retriever's lowest normalised score. ``alpha`` is the weight of the first of
  two retrievers (the second gets ``1 - alpha``); ``weights`` gives one weight per retriever.

Each retriever runs to its own ``cutoff`` (its depth). Every fused hit keeps each retriever's
score and 1-based rank in ``stage_scores`` (``"bm25"``, ``"bm25_rank"``, ``"dense"``, ...).

Config example::

    - type: fusion
      method: rrf
      k: 60
      retrievers:
        - {type: bm25, index: lucene, cutoff: 100}
        - {type: dense, index: minilm, cutoff: 100}
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Sequence

from pydantic import Field, model_validator

from pipeline.core.build_context import BuildContext, build_stage, parse_stage, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.core.score_fusion import (
    Normalization,
    linear_fusion,
    normalize_scores,
)
from pipeline.core.stage import Stage
from pipeline.core.types import Hit, Query, Results, sort_hits

Method = Literal["rrf", "linear"]



class FusionConfig(StageConfig):
    type: str = "fusion"
    retrievers: list[dict[str, Any]] = Field(min_length=1, max_length=16)
    method: Method = "rrf"
    k: float = Field(default=60, ge=0, le=100_000)
    """RRF rank constant."""
    alpha: float | None = Field(default=None, ge=0, le=1)
    """Weight of the first of exactly two retrievers (the second gets 1 - alpha)."""
    weights: list[float] | None = None
    """One non-negative weight per retriever (default: all 1)."""
    normalization: Normalization = "minmax"
    """Score normalisation of the linear method."""

    @model_validator(mode="after")
    def _check(self) -> "FusionConfig":
        for i, raw in enumerate(self.retrievers):
            try:
                parse_stage(f"retrievers[{i}]", raw)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            if raw.get("type") == "fusion":
                raise ValueError(f"retrievers[{i}]: a fusion stage cannot nest another fusion stage")
        if self.alpha is not None and self.weights is not None:
            raise ValueError("give either alpha or weights, not both")
        if self.alpha is not None and len(self.retrievers) != 2:
            raise ValueError(f"alpha needs exactly two retrievers, got {len(self.retrievers)}: use weights")
        if self.weights is not None:
            if len(self.weights) != len(self.retrievers):
                raise ValueError(f"weights has {len(self.weights)} entries for {len(self.retrievers)} retrievers")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be non-negative and not all zero")
        return self

    def resolved_weights(self) -> list[float]:
        if self.alpha is not None:
            return [self.alpha, 1.0 - self.alpha]
        return list(self.weights) if self.weights is not None else [1.0] * len(self.retrievers)


class Fusion(Stage):
    """Run several retrievers on the batch (concurrently) and fuse their rankings.

    Example::

        hybrid = Fusion([bm25 % 100, dense % 100], method="rrf", k=60)
        results = hybrid([Query("1", "0-dimensional biomaterials")])
    """

    name = "fusion"

    def __init__(self, retrievers: Sequence[Stage], depths: Sequence[int | None] | None = None, method: Method = "rrf",
                 k: float = 60, weights: Sequence[float] | None = None, normalization: Normalization = "minmax"):
        if not retrievers:
            raise ValueError("fusion needs at least one retriever")
        names = [r.name for r in retrievers]
        if len(set(names)) != len(names):
            raise ConfigError(f"fusion retrievers need distinct names (set 'name'), got {names}")
        if any(r.needs_candidates for r in retrievers):
            raise ConfigError(f"fusion fuses retrievers; {[r.name for r in retrievers if r.needs_candidates]} rerank candidates")
        depths = list(depths) if depths is not None else [None] * len(retrievers)
        weights = list(weights) if weights is not None else [1.0] * len(retrievers)
        if len(depths) != len(retrievers) or len(weights) != len(retrievers):
            raise ValueError("one depth and one weight per retriever")
        if method not in ("rrf", "linear"):
            raise ValueError(f"unknown fusion method {method!r} (rrf or linear)")
        self.retrievers = [r.with_depth(d) if d is not None else r for r, d in zip(retrievers, depths, strict=True)]
        self.depths, self.method, self.k, self.weights, self.normalization = depths, method, k, weights, normalization
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        if not queries:
            return {}
        runs = self._run_retrievers(queries)
        return {q.query_id: self.fuse(q.query_id, [run.get(q.query_id, []) for run in runs]) for q in queries}

    def _run_retrievers(self, queries: Sequence[Query]) -> list[Results]:
        if len(self.retrievers) == 1:
            return [self._run_one(self.retrievers[0], queries)]
        pool = self._executor()
        futures = [pool.submit(self._run_one, r, queries) for r in self.retrievers[1:]]
        first = self._run_one(self.retrievers[0], queries)  # the caller's thread runs one retriever itself
        return [first, *(f.result() for f in futures)]

    def _executor(self) -> ThreadPoolExecutor:
        """One long-lived pool per stage: pyjnius leaves JVM-attached threads behind when short-lived
        threads end (the JVM can then hang), so worker threads are reused, never discarded per call."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.retrievers) - 1), thread_name_prefix="fusion")
            return self._pool

    def _run_one(self, retriever: Stage, queries: Sequence[Query]) -> Results:
        try:
            return retriever(queries)
        except PipelineError:
            raise
        except Exception as exc:  # noqa: BLE001 - name the retriever that failed
            raise PipelineError(f"fusion retriever {retriever.name!r} failed: {exc}") from exc

    def fuse(self, query_id: str, lists: Sequence[list[Hit]]) -> list[Hit]:
        """One fused, sorted hit list from one ranked list per retriever."""
        lists = [hits[:depth] if depth is not None else hits for hits, depth in zip(lists, self.depths, strict=True)]
        explain: dict[str, dict[str, float]] = {}
        for retriever, hits in zip(self.retrievers, lists, strict=True):
            for rank, hit in enumerate(hits, 1):
                info = explain.setdefault(hit.doc_id, {})
                info.update(hit.stage_scores)
                info[retriever.name] = hit.score
                info[f"{retriever.name}_rank"] = float(rank)
        fused = self._rrf(lists) if self.method == "rrf" else self._linear(lists, explain.keys())
        return sort_hits([Hit(query_id, d, s, {**explain[d], self.name: s}) for d, s in fused.items()])

    def _rrf(self, lists: Sequence[list[Hit]]) -> dict[str, float]:
        fused: dict[str, float] = {}
        for hits, weight in zip(lists, self.weights, strict=True):
            for rank, hit in enumerate(hits, 1):
                fused[hit.doc_id] = fused.get(hit.doc_id, 0.0) + weight / (self.k + rank)
        return fused

    def _linear(self, lists: Sequence[list[Hit]], doc_ids) -> dict[str, float]:
        return linear_fusion([[(h.doc_id, h.score) for h in hits] for hits in lists], self.weights,
                             self.normalization, doc_ids)


def _build(cfg: FusionConfig, ctx: BuildContext) -> Fusion:
    children = [build_stage(raw, ctx, where=f"fusion.retrievers[{i}]") for i, raw in enumerate(cfg.retrievers)]
    depths = [raw.get("cutoff") for raw in cfg.retrievers]
    return Fusion(children, depths, cfg.method, cfg.k, cfg.resolved_weights(), cfg.normalization)


register_stage("fusion", FusionConfig, _build)

__all__ = ["Fusion", "FusionConfig", "normalize_scores"]
