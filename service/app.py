"""FastAPI app factory: ``create_app(settings)``; the lifespan loads the pipelines once.

Wiring: request-id/access-log middleware (outermost), body size limit, CORS; result cache
(Redis or in-process LRU); per-key rate limiter; Prometheus metrics; the index reloader and,
with ``reload_poll_s``, its watcher; the search page at ``/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import errors
from service.admission import RerankAdmission
from service.api_docs import mount_api_docs
from service.cache import QUERY_EMBEDDING_CACHE, QueryEmbeddingCache, build_cache
from service.deps import require_client
from service.engine import Engine
from service.metrics import Metrics
from service.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from service.page import mount_page
from service.rate_limit import build_limiter
from service.reload import Reloader
from service.routes_ops import router as ops_router
from service.routes_search import router as search_router
from service.search import Searcher
from service.settings import Settings
from service.threads import Workers

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the app. Pass ``engine`` to serve an already loaded engine (tests)."""
    settings = settings or Settings()
    metrics = Metrics()
    cache = build_cache(settings, on_outcome=metrics.cache_outcome,
                        on_error=lambda op: metrics.cache_errors.labels("redis", op).inc())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        workers = app.state.workers = Workers(settings.worker_threads)  # per start: a restarted app gets fresh threads
        if engine is not None:
            loaded = engine
        else:
            import importlib

            for module in settings.stage_plugins:
                importlib.import_module(module)
            shared = {QUERY_EMBEDDING_CACHE: QueryEmbeddingCache(cache, settings.cache_namespace)}
            loaded = await workers.run(Engine.from_settings, settings, shared)
        loaded.on_rerank_batch = lambda pipe, stage, n: metrics.rerank_batch.labels(pipe, stage).observe(n)
        app.state.searcher = Searcher(loaded, cache, metrics, settings)
        app.state.reloader = Reloader(loaded, metrics, workers)
        app.state.engine = loaded
        # always watched: a served version damaged on disk falls back by itself; new versions only with reload_poll_s
        watcher = asyncio.create_task(app.state.reloader.watch(settings.reload_poll_s or settings.health_poll_s,
                                                                follow_published=bool(settings.reload_poll_s)))
        logger.info("serving %s (cache: %s, keys: %s, rate limit: %s/min)", sorted(loaded.collections),
                    cache.backend.name, "on" if settings.api_key_hashes else "off", settings.rate_limit_per_minute or "off")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            loaded.guard.drop_leases(loaded.served_versions())
            workers.shutdown()

    production = settings.env == "production"
    title = "Neural search service"
    app = FastAPI(
        title=title,
        description="BM25, dense and hybrid retrieval with neural reranking, behind one endpoint.",
        version="0.2.0",
        lifespan=lifespan,
        docs_url=None,  # served from local files by mount_api_docs: no CDN
        redoc_url=None,
        openapi_url=None if production else "/openapi.json",  # production: behind a key (mount_api_docs)
    )
    app.state.settings, app.state.metrics, app.state.cache = settings, metrics, cache
    app.state.limiter = build_limiter(settings)
    app.state.admission = RerankAdmission(settings.rerank_max_request_cost, settings.rerank_max_inflight_cost,
                                          settings.rerank_client_share)
    errors.install(app)
    app.include_router(search_router)
    app.include_router(ops_router)
    mount_page(app)
    mount_api_docs(app, title, keyed=[Depends(require_client)] if production else None)
    # added last = outermost: ids and logs cover every response, 413 and CORS preflights included
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                       allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
                       expose_headers=["x-request-id", "retry-after"])
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app

