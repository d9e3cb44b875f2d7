"""The one stage protocol that retrievers, rerankers and fusion implement.

A :class:`Stage` is batch-first: ``stage(queries, candidates)`` returns
``Results`` for the whole batch. Retrievers ignore ``candidates``; rerankers
(``needs_candidates = True``) require them. Stages compose with ``>>`` into a
flat :class:`Pipeline`, and ``stage % k`` sets the cutoff after that stage::

    pipeline = (bm25 % 100) >> (cross_encoder % 10)
    results = pipeline([Query("q1", "what is BM25?")])
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from pipeline.core.errors import StageContractError, StageError
from pipeline.core.types import Query, Results, sort_hits

logger = logging.getLogger(__name__)


_phases = threading.local()


@contextmanager
def phase(name: str):
    """Time a part of a stage's work; :meth:`Pipeline.run` reports it as ``"<stage>.<name>"`` in
    ``timings_ms`` (the service's ``explain``). Outside a pipeline run it only runs the block::

        with phase("tokenize"):
            encoded = scorer.encode(pairs)
    """
    start = time.perf_counter()
    try:
        yield
    finally:
        record = getattr(_phases, "current", None)
        if record is not None:
            record[name] = record.get(name, 0.0) + (time.perf_counter() - start) * 1000


class Stage(ABC):
    """Base class of every stage.

    Subclasses implement :meth:`transform`; a subclass that forgets it fails at
    construction (``TypeError: Can't instantiate abstract class``).
    """

    name: str = "stage"
    needs_candidates: ClassVar[bool] = False
    fail_open: bool = False
    """If True and the stage raises, the pipeline keeps the previous stage's
    ranking and marks the run ``degraded`` instead of failing the request."""

    def notes(self) -> list[str]:
        """What an operator should know about how this stage runs (e.g. a requested precision that
        this machine could not honour); shown by the service's ``GET /pipelines``."""
        return []

    def fast_path(self) -> dict | None:
        """How this stage's model runs (a reranker: device, precision, packing), for ``GET /pipelines``; else None."""
        return None

    def language_choice(self, query: Query) -> dict | None:
        """How this stage treats ``query``'s language (a reranker with language modules), else None;
        raises :class:`~pipeline.core.language.LanguageError` for a malformed ``query.lang``."""
        return None

    @abstractmethod
    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        """Return ``query_id -> hits`` (sorted, best first) for every query of the batch."""

    def __call__(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        if self.needs_candidates and candidates is None:
            raise StageContractError(
                f"stage {self.name!r} reranks candidates: put a retriever before it, "
                f"e.g. bm25 >> {self.name}"
            )
        results = self.transform(list(queries), candidates)
        missing = [q.query_id for q in queries if q.query_id not in results]
        if missing:
            raise StageContractError(f"stage {self.name!r} returned no results for queries {missing[:5]}")
        return results

    def with_depth(self, k: int) -> "Stage":
        """This stage retrieving at most ``k`` hits per query (a retriever overrides this to
        search less deeply when a request needs fewer hits); default: unchanged."""
        return self

    def __rshift__(self, other: "Stage") -> "Pipeline":
        return Pipeline([self]) >> other

    def __mod__(self, cutoff: int) -> "Pipeline":
        return Pipeline([self], cutoffs=[cutoff])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@dataclass
class PipelineRun:
    """What :meth:`Pipeline.run` returns: results plus how each stage went."""

    results: Results
    timings_ms: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    """Names of stages that failed open (their input ranking was kept)."""


class Pipeline(Stage):
    """A flat sequence of stages with an optional cutoff after each one."""

    def __init__(self, stages: Sequence[Stage], cutoffs: Sequence[int | None] | None = None, name: str = "pipeline"):
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        cutoffs = list(cutoffs) if cutoffs is not None else [None] * len(stages)
        if len(cutoffs) != len(stages):
            raise ValueError("one cutoff per stage (None for no cutoff)")
        self.stages: list[Stage] = []
        self.cutoffs: list[int | None] = []
        for stage, cutoff in zip(stages, cutoffs, strict=True):
            if cutoff is not None and cutoff < 1:
                raise ValueError(f"cutoff after stage {stage.name!r} must be >= 1, got {cutoff}")
            if isinstance(stage, Pipeline):  # flatten nested pipelines
                self.stages.extend(stage.stages)
                self.cutoffs.extend(stage.cutoffs[:-1] + [_min_cutoff(stage.cutoffs[-1], cutoff)])
            else:
                self.stages.append(stage)
                self.cutoffs.append(cutoff)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique within a pipeline, got {names}")
        self.name = name

    @property
    def needs_candidates(self) -> bool:  # type: ignore[override]
        return self.stages[0].needs_candidates

    def notes(self) -> list[str]:
        return [note for stage in self.stages for note in stage.notes()]

    def fast_path(self) -> dict | None:  # type: ignore[override]
        """``{stage name: its fast path}`` for the stages that report one (the rerankers); None if none does."""
        out = {stage.name: fp for stage in self.stages if (fp := stage.fast_path()) is not None}
        return out or None

    def __rshift__(self, other: Stage) -> "Pipeline":
        return Pipeline([*self.stages, other], cutoffs=[*self.cutoffs, None], name=self.name)

    def __mod__(self, cutoff: int) -> "Pipeline":
        return Pipeline(self.stages, cutoffs=[*self.cutoffs[:-1], _min_cutoff(self.cutoffs[-1], cutoff)], name=self.name)

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        return self.run(queries, candidates).results

    def run(self, queries: Sequence[Query], candidates: Results | None = None, k: int | None = None) -> PipelineRun:
        """Run every stage in order, timing each, failing open where a stage allows it.

        ``k`` (optional) caps the final list; a final retriever then searches only ``k`` deep.
        """
        run = PipelineRun(results=candidates or {})
        current = candidates
        stages, cutoffs = list(self.stages), list(self.cutoffs)
        if k is not None:
            if not stages[-1].needs_candidates:
                stages[-1] = stages[-1].with_depth(k)
            cutoffs[-1] = _min_cutoff(cutoffs[-1], k)
        for stage, cutoff in zip(stages, cutoffs, strict=True):
            start = time.perf_counter()
            outer, _phases.current = getattr(_phases, "current", None), {}
            try:
                current = stage(queries, current)
            except StageContractError:
                raise
            except Exception as exc:  # noqa: BLE001 - decide between fail-open and typed error
                if stage.fail_open and current is not None:
                    logger.warning("stage %s failed open: %s", stage.name, exc)
                    run.degraded.append(stage.name)
                else:
                    raise StageError(f"stage {stage.name!r} failed: {exc}") from exc
            finally:
                phases, _phases.current = _phases.current, outer
            if cutoff is not None:
                current = {qid: hits[:cutoff] for qid, hits in current.items()}
            run.timings_ms[stage.name] = (time.perf_counter() - start) * 1000
            run.timings_ms.update({f"{stage.name}.{name}": ms for name, ms in phases.items()})
        run.results = current or {}
        return run


def _min_cutoff(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


__all__ = ["Stage", "Pipeline", "PipelineRun", "phase", "sort_hits"]
