"""Search and rerank work behind the endpoints: cache lookups, one batched pipeline run, documents.

Blocking work (pipelines, SQLite, Redis) runs in threads via ``asyncio.to_thread``; the
state of a collection is taken once per request so that a hot swap never mixes versions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from pipeline.core.errors import PipelineError, StageError, UnknownPipelineError
from pipeline.core.types import Document, Hit, Query
from pipeline.scorers.base import ListwiseScorer
from pipeline.stages.rerank import RerankStage
from service.cache import Cache, normalise_query, result_key
from service.engine import CollectionState, Engine
from service.errors import RerankerUnavailableError
from service.metrics import Metrics
from service.schemas import SearchHit
from service.settings import Settings


@dataclass
class QueryResult:
    """One query's ranked hits and how they were produced."""

    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    cached: bool = False


class Searcher:
    """Runs searches with the result cache in front of the pipelines."""

    def __init__(self, engine: Engine, cache: Cache, metrics: Metrics, settings: Settings):
        self.engine, self.cache, self.metrics, self.settings = engine, cache, metrics, settings

    def run(self, state: CollectionState, pipeline: str, queries: Sequence[Query], k: int) -> list[QueryResult]:
        """Ranked hits for every query (cached ones from the cache, the rest in one pipeline batch)."""
        pipe = state.pipeline(pipeline)
        use_cache = self.settings.cache_ttl_s > 0
        keys = [
            result_key(self.settings.cache_namespace, q.text, pipeline, state.config_hashes.get(pipeline, ""),
                       state.versions.get(pipeline, {}), k, state.name, q.lang)
            for q in queries
        ]
        cached = self.cache.get_many_json("results", keys) if use_cache else [None] * len(queries)
        out: list[QueryResult | None] = [_from_cache(c) if c is not None else None for c in cached]
        misses = [i for i, r in enumerate(out) if r is None]
        if misses:
            batch = [Query(f"q{i}", normalise_query(queries[i].text), queries[i].lang) for i in misses]  # = the key's text
            run = pipe.run(batch, None, k)  # k caps the final list; a final retriever searches only k deep
            self.metrics.stage_timings(pipeline, run.timings_ms)
            for stage in run.degraded:
                self.metrics.degraded.labels(pipeline, stage).inc()
            for i, q in zip(misses, batch, strict=True):
                result = QueryResult(run.results.get(q.query_id, [])[:k], dict(run.timings_ms), list(run.degraded))
                out[i] = result
                if use_cache and not run.degraded:
                    self.cache.set_json("results", keys[i], _to_cache(result), self.settings.cache_ttl_s)
        return [r for r in out if r is not None]

    def hits(self, state: CollectionState, result: QueryResult, docs: dict[str, Document], explain: bool) -> list[SearchHit]:
        out = []
        limit = self.settings.snippet_chars
        for rank, h in enumerate(result.hits, 1):
            doc = docs.get(h.doc_id)
            text = doc.text if doc else ""
            if limit and len(text) > limit:
                text = text[:limit] + "…"
            out.append(SearchHit(rank=rank, doc_id=h.doc_id, score=h.score, title=doc.title if doc else "", text=text,
                                 stage_scores=dict(h.stage_scores) if explain else None))
        return out

    def documents(self, state: CollectionState, results: Sequence[QueryResult]) -> dict[str, Document]:
        ids = [h.doc_id for r in results for h in r.hits]
        return state.docstore.get_many(ids) if state.docstore else {}

    def search(self, state: CollectionState, pipeline: str, queries: Sequence[Query], k: int
               ) -> tuple[list[QueryResult], dict[str, Document]]:
        """Blocking: cache, pipeline and document lookups (call it once per request, off the event loop)."""
        start = time.perf_counter()
        results = self.run(state, pipeline, queries, k)
        docs = self.documents(state, results)
        self.metrics.request_seconds.labels("search", pipeline).observe(time.perf_counter() - start)
        return results, docs


def pick_reranker(engine: Engine, model: str | None, allowed: list[str] | None, collection: str | None
                  ) -> tuple[str, RerankStage]:
    """The reranking stage a ``/rerank`` request asks for: 404 unknown, 503 none loaded."""
    loaded, off = engine.rerankers(collection)
    if allowed is not None:
        loaded = {k: v for k, v in loaded.items() if k in allowed}
        off = {k: v for k, v in off.items() if k in allowed}
    usable = {k: v for k, v in loaded.items() if isinstance(v, RerankStage)}
    if model is None:
        if not usable:
            why = "; ".join(f"{k}: {v}" for k, v in off.items()) or "no reranking pipeline is configured"
            raise RerankerUnavailableError(f"no reranker is loaded ({why})")
        model = next(iter(usable))
    if model in usable:
        return model, usable[model]
    if model in loaded:
        raise RerankerUnavailableError(f"the reranker of {model!r} cannot score documents sent in a request")
    if model in off:
        raise RerankerUnavailableError(f"reranker {model!r} is off: {off[model]}")
    raise UnknownPipelineError(f"unknown reranker {model!r}; loaded: {sorted(usable)}")


def rerank_documents(stage: RerankStage, query: Query, docs: Sequence[Document]) -> list[float]:
    """Scores of ``docs`` (in order) for ``query`` by the scorer of a reranking stage.

    The texts are the request's, as :func:`~pipeline.scorers.passages.passage_text` joins them (the
    stage's own passage format: the listwise prompt's ``"Title. text"``, the modular reranker's text
    alone). A listwise scorer's order becomes scores ``n - rank``.
    """
    texts = stage.passages.texts_of(docs)
    try:
        if isinstance(stage.scorer, ListwiseScorer):
            order = stage.scorer.rank(query, texts)
            scores = [0.0] * len(texts)
            for rank, i in enumerate(order):
                scores[i] = float(len(texts) - rank)
        else:
            scores = [float(s) for s in stage.scorer.score(query, texts)]
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing reranker is a 503, not a crash
        raise StageError(f"reranker {stage.name!r} failed: {exc}") from exc
    if len(scores) != len(docs) or not all(math.isfinite(s) for s in scores):
        raise StageError(f"reranker {stage.name!r} returned {len(scores)} scores (some not finite) for {len(docs)} documents")
    return scores


def _to_cache(result: QueryResult) -> dict[str, Any]:
    return {
        "hits": [[h.doc_id, h.score, dict(h.stage_scores)] for h in result.hits],
        "timings_ms": result.timings_ms,
    }


def _from_cache(value: dict[str, Any]) -> QueryResult:
    hits = [Hit("q", doc_id, float(score), stage_scores) for doc_id, score, stage_scores in value["hits"]]
    return QueryResult(hits, dict(value.get("timings_ms", {})), [], cached=True)
