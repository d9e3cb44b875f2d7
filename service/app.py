"""FastAPI app factory: ``create_app(settings)``; the lifespan loads the pipelines once."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from pipeline.types import Query
from service import errors
from service.deps import EngineDep
from service.engine import Engine
from service.schemas import ErrorResponse, PipelineStatus, SearchHit, SearchRequest, SearchResponse
from service.settings import Settings

logger = logging.getLogger(__name__)

ERRORS = {
    400: {"model": ErrorResponse},
    404: {"model": ErrorResponse, "description": "Unknown pipeline or collection"},
    503: {"model": ErrorResponse, "description": "Pipeline temporarily unavailable"},
}


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the app. Pass ``engine`` to serve an already loaded engine (tests)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = engine or await asyncio.to_thread(Engine.from_settings, settings)
        yield

    app = FastAPI(
        title="Neural search service",
        description="BM25, dense and hybrid retrieval with neural reranking, behind one endpoint.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)

    # PERF: /search must stay within 2x of an in-process LuceneSearcher call for BM25
    # (benchmarks/bm25_http_latency.py). One thread hop per request, the response serialised
    # once by pydantic-core, and only pure-ASGI middleware (Starlette's BaseHTTPMiddleware
    # alone costs more than a BM25 search).
    @app.post("/search", response_model=SearchResponse, responses=ERRORS, response_model_exclude_none=True)
    async def search(body: SearchRequest, engine: EngineDep) -> Response:
        if len(body.query) > settings.max_query_chars:
            raise HTTPException(422, detail=f"query is {len(body.query)} characters; the limit is {settings.max_query_chars}")
        if body.k > settings.max_k:
            raise HTTPException(422, detail=f"k={body.k} is over the limit of {settings.max_k}")
        engine.pipeline(body.pipeline, body.collection)  # unknown names fail here, before the thread hop
        result = await asyncio.to_thread(_search, engine, body, settings.snippet_chars)
        return Response(result.model_dump_json(exclude_none=True), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request):
        """Readiness: pipelines are loaded and at least one can serve."""
        engine_ = getattr(request.app.state, "engine", None)
        if engine_ is None or not engine_.ready():
            return JSONResponse({"status": "not ready"}, status_code=503)
        return {"status": "ready", "collections": {n: sorted(s.pipelines) for n, s in engine_.collections.items()}}

    @app.get("/pipelines", response_model=list[PipelineStatus])
    async def pipelines(engine: EngineDep) -> list[PipelineStatus]:
        """Every configured pipeline per collection: loaded, or off with the reason."""
        out = []
        for name, state in engine.collections.items():
            for p in engine.config.pipelines:
                desc = engine.config.pipelines[p].description
                if p in state.pipelines:
                    out.append(PipelineStatus(name=p, collection=name, loaded=True, description=desc))
                elif p in state.off:
                    out.append(PipelineStatus(name=p, collection=name, loaded=False, reason=state.off[p], description=desc))
        return out

    return app


def _search(engine: Engine, body: SearchRequest, snippet_chars: int) -> SearchResponse:
    """The blocking part of a search (pipeline and document lookups), run off the event loop."""
    start = time.perf_counter()
    collection = engine.collection(body.collection).name
    pipe = engine.pipeline(body.pipeline, collection)
    run = pipe.run([Query("q", body.query, body.lang)], None, body.k)
    hits = run.results.get("q", [])[: body.k]
    docs = engine.documents([h.doc_id for h in hits], collection)
    out = []
    for rank, h in enumerate(hits, 1):
        doc = docs.get(h.doc_id)
        text = doc.text if doc else ""
        if snippet_chars and len(text) > snippet_chars:
            text = text[:snippet_chars] + "…"
        out.append(SearchHit(rank=rank, doc_id=h.doc_id, score=h.score, title=doc.title if doc else "", text=text,
                             stage_scores=dict(h.stage_scores) if body.explain else None))
    return SearchResponse(
        query=body.query, pipeline=body.pipeline, collection=collection, hits=out,
        took_ms=(time.perf_counter() - start) * 1000, degraded=run.degraded,
        timings_ms=run.timings_ms if body.explain else None,
    )
