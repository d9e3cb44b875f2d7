"""Search and rerank work behind the endpoints: cache lookups, one batched pipeline run, documents.

Blocking work (pipelines, SQLite, Redis) runs in threads via ``asyncio.to_thread``; the
state of a collection is taken once per request so that a hot swap never mixes versions.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from pipeline.errors import PipelineError, StageError, UnknownPipelineError
from pipeline.stage import Stage
from pipeline.types import Document, Hit, Query
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


class InMemoryDocs:
    """The documents of one rerank request, looked up like a :class:`~pipeline.docstore.DocStore`."""

    def __init__(self, docs: Sequence[Document]):
        self._docs = {d.doc_id: d for d in docs}
        self.count = len(self._docs)

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, Document]:
        return {i: self._docs[i] for i in doc_ids if i in self._docs}

    def get(self, doc_id: str) -> Document | None:
        return self._docs.get(doc_id)


def pick_reranker(engine: Engine, model: str | None, allowed: list[str] | None, collection: str | None) -> tuple[str, Stage]:
    """The reranking stage a ``/rerank`` request asks for: 404 unknown, 503 none loaded."""
    loaded, off = engine.rerankers(collection)
    if allowed is not None:
        loaded = {k: v for k, v in loaded.items() if k in allowed}
        off = {k: v for k, v in off.items() if k in allowed}
    usable = {k: v for k, v in loaded.items() if can_score_documents(v)}
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


DOC_ATTRIBUTES = ("docstore", "docs")
"""Attributes through which rerankers read candidate texts (``.get_many(ids) -> {id: Document}``)."""


def _doc_attribute(stage: Stage) -> str | None:
    for name in DOC_ATTRIBUTES:
        if callable(getattr(getattr(stage, name, None), "get_many", None)):
            return name
    return None


def can_score_documents(stage: Stage) -> bool:
    """A reranker can take request documents through ``score_texts`` or a swappable document store."""
    return callable(getattr(stage, "score_texts", None)) or _doc_attribute(stage) is not None


def rerank_documents(stage: Stage, query: Query, docs: Sequence[Document]) -> list[float]:
    """Scores of ``docs`` (in order) for ``query`` by a reranking stage.

    Stages with ``score_texts(query, documents) -> scores`` are called directly; stages that read
    texts from ``self.docstore`` run on a shallow copy whose docstore holds the request's documents.
    """
    try:
        scores = _score(stage, query, docs)
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing reranker is a 503, not a crash
        raise StageError(f"reranker {stage.name!r} failed: {exc}") from exc
    if len(scores) != len(docs) or not all(math.isfinite(s) for s in scores):
        raise StageError(f"reranker {stage.name!r} returned {len(scores)} scores (some not finite) for {len(docs)} documents")
    return scores


def _score(stage: Stage, query: Query, docs: Sequence[Document]) -> list[float]:
    scorer = getattr(stage, "score_texts", None)
    if callable(scorer):
        return [float(s) for s in scorer(query, list(docs))]
    local = copy.copy(stage)
    setattr(local, _doc_attribute(stage) or DOC_ATTRIBUTES[0], InMemoryDocs(docs))
    chunk = getattr(stage, "top_n", None)
    chunk = chunk if isinstance(chunk, int) and chunk > 0 else len(docs)
    by_id: dict[str, float] = {}
    for start in range(0, len(docs), chunk):  # a reranker that scores only its top_n gets chunks of top_n
        part = docs[start : start + chunk]
        candidates = {query.query_id: [Hit(query.query_id, d.doc_id, 0.0, {}) for d in part]}
        by_id.update({h.doc_id: float(h.score) for h in local([query], candidates)[query.query_id]})
    missing = [d.doc_id for d in docs if d.doc_id not in by_id]
    if missing:
        raise StageError(f"reranker {stage.name!r} returned no score for documents {missing[:5]}")
    return [by_id[d.doc_id] for d in docs]


def _to_cache(result: QueryResult) -> dict[str, Any]:
    return {
        "hits": [[h.doc_id, h.score, dict(h.stage_scores)] for h in result.hits],
        "timings_ms": result.timings_ms,
    }


def _from_cache(value: dict[str, Any]) -> QueryResult:
    hits = [Hit("q", doc_id, float(score), stage_scores) for doc_id, score, stage_scores in value["hits"]]
    return QueryResult(hits, dict(value.get("timings_ms", {})), [], cached=True)
