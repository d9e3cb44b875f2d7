"""``POST /search``, ``POST /search/batch`` and ``POST /rerank``."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request, Response

from pipeline.core.language import language_info
from pipeline.core.types import Document, Query
from service.admission import rerank_cost
from service.deps import ClientDep, EngineDep, SearcherDep, charge, search_cost
from service.highlight import add_highlights, lucene_analyzer, pipeline_language
from service.rerank_api import calibrated, meta, prepare_documents, response_id
from service.schemas import (
    BatchResult,
    BatchSearchRequest,
    BatchSearchResponse,
    ErrorResponse,
    RerankDocument,
    RerankedDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    SearchRequest,
    SearchResponse,
)
from service.search import pick_reranker, rerank_documents

ERRORS = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse, "description": "Missing API key"},
    403: {"model": ErrorResponse, "description": "Invalid API key"},
    404: {"model": ErrorResponse, "description": "Unknown pipeline, collection or reranker"},
    413: {"model": ErrorResponse, "description": "Request body over the size limit"},
    422: {"model": ErrorResponse, "description": "Invalid request"},
    429: {"model": ErrorResponse, "description": "Rate limit exceeded (see Retry-After)"},
    500: {"model": ErrorResponse, "description": "Internal error"},
    503: {"model": ErrorResponse, "description": "Pipeline temporarily unavailable"},
}

router = APIRouter()


def _check_limits(request: Request, query: str, k: int) -> None:
    settings = request.app.state.settings
    if len(query) > settings.max_query_chars:
        raise HTTPException(422, detail=f"query is {len(query)} characters; the limit is {settings.max_query_chars}")
    if k > settings.max_k:
        raise HTTPException(422, detail=f"k={k} is over the limit of {settings.max_k}")


# PERF: /search must stay within 2x of an in-process LuceneSearcher call for BM25
# (benchmarks/bm25_http_latency.py): one thread hop per request (cache, pipeline, documents and
# serialisation together), the response serialised once by pydantic-core, pure-ASGI middleware only.
def _json(model) -> Response:
    return Response(model.model_dump_json(exclude_none=True), media_type="application/json")


@router.post("/search", response_model=SearchResponse, responses=ERRORS, response_model_exclude_none=True)
async def search(body: SearchRequest, request: Request, searcher: SearcherDep, client: ClientDep) -> Response:
    """Rank the collection for one query; ``explain`` adds per-stage scores and timings."""
    _check_limits(request, body.query, body.k)
    charge(request, client.id, search_cost(request, 1, body.k) - 1, already=1)  # one taken on arrival
    state = searcher.engine.collection(body.collection)
    query = Query("q", body.query, body.lang)
    language = language_info(state.pipeline(body.pipeline), query)  # unknown pipeline: 404, bad lang: 400

    def work() -> Response:
        start = time.perf_counter()
        results, docs = searcher.search(state, body.pipeline, [query], body.k)
        result = results[0]
        hits = searcher.hits(state, result, docs, body.explain)
        if body.highlight:
            add_highlights(hits, body.query, lucene_analyzer(body.lang or pipeline_language(state.pipeline(body.pipeline))))
        return _json(SearchResponse(
            query=body.query, pipeline=body.pipeline, collection=state.name, hits=hits,
            took_ms=(time.perf_counter() - start) * 1000, degraded=result.degraded,
            timings_ms=result.timings_ms if body.explain else None, cached=result.cached, language=language,
        ))

    return await request.app.state.workers.run(work)


@router.post("/search/batch", response_model=BatchSearchResponse, responses=ERRORS, response_model_exclude_none=True)
async def search_batch(body: BatchSearchRequest, request: Request, searcher: SearcherDep, client: ClientDep) -> Response:
    """Rank the collection for many queries in one pipeline batch (at most ``max_batch``)."""
    settings = request.app.state.settings
    if len(body.queries) > settings.max_batch:
        raise HTTPException(422, detail=f"a batch of {len(body.queries)} queries is over the limit of {settings.max_batch}")
    for q in body.queries:
        _check_limits(request, q.query, body.k)
    charge(request, client.id, search_cost(request, len(body.queries), body.k) - 1, already=1)
    ids = [q.id if q.id is not None else str(i) for i, q in enumerate(body.queries)]
    state = searcher.engine.collection(body.collection)
    state.pipeline(body.pipeline)
    queries = [Query(f"q{i}", q.query, q.lang) for i, q in enumerate(body.queries)]

    def work() -> Response:
        start = time.perf_counter()
        results, docs = searcher.search(state, body.pipeline, queries, body.k)
        out = [
            BatchResult(id=qid, query=q.query, hits=searcher.hits(state, r, docs, body.explain), degraded=r.degraded,
                        timings_ms=r.timings_ms if body.explain else None, cached=r.cached)
            for qid, q, r in zip(ids, body.queries, results, strict=True)
        ]
        return _json(BatchSearchResponse(pipeline=body.pipeline, collection=state.name, results=out,
                                         took_ms=(time.perf_counter() - start) * 1000))

    return await request.app.state.workers.run(work)


@router.post("/rerank", response_model=RerankResponse, responses=ERRORS, response_model_exclude_none=True)
async def rerank(body: RerankRequest, request: Request, engine: EngineDep, client: ClientDep) -> RerankResponse:
    """Order your own documents for a query (Cohere's rerank shape); ``model`` names a reranking pipeline.

    ``relevance_score`` is sigmoid(raw score) in [0, 1]; each result reports its document's length in tokens
    and whether it was truncated (see service/rerank_api.py and docs/service-api.md)."""
    settings = request.app.state.settings
    metrics = request.app.state.metrics
    _check_limits(request, body.query, 1)
    if len(body.documents) > settings.max_rerank_documents:
        raise HTTPException(422, detail=f"{len(body.documents)} documents is over the limit of {settings.max_rerank_documents}")
    model, stage = pick_reranker(engine, body.model, settings.rerank_pipelines, body.collection)
    docs = [
        Document(str(i), "", d) if isinstance(d, str) else Document(str(i), d.title or "", d.text)
        for i, d in enumerate(body.documents)
    ]
    start = time.perf_counter()
    metrics.rerank_batch.labels(model, "rerank_endpoint").observe(len(docs))
    with request.app.state.admission.admit(client.id, rerank_cost(body.query, [d.text for d in docs])):  # 413/429/503
        prepared = await request.app.state.workers.run(prepare_documents, stage, body.query, docs,
                                                       body.max_tokens_per_doc, body.truncate)
        scores = await request.app.state.workers.run(rerank_documents, stage, Query("q", body.query), prepared.docs)
    metrics.request_seconds.labels("rerank", model).observe(time.perf_counter() - start)
    order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))[: body.top_n or len(docs)]
    results = []
    for i in order:
        doc = body.documents[i]
        shown = None
        if body.return_documents:
            shown = RerankedDocument(text=doc) if isinstance(doc, str) else RerankedDocument(text=doc.text, title=doc.title)
        results.append(RerankResult(index=i, relevance_score=calibrated(scores[i]), raw_score=scores[i] if body.raw_scores else None,
                                    tokens=prepared.tokens[i], truncated=prepared.truncated[i], document=shown))
    return RerankResponse(id=response_id(), results=results, meta=meta(len(docs), prepared.warnings), model=model,
                          took_ms=(time.perf_counter() - start) * 1000)

__all__ = ["router", "ERRORS", "RerankDocument"]
