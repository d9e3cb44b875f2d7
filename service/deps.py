"""FastAPI dependencies (tests swap them with ``app.dependency_overrides``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.auth import Principal, authenticate, authorize_admin
from service.engine import Engine
from service.search import Searcher


def get_engine(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise HTTPException(status_code=503, detail="the service is still loading")
    return engine


def get_searcher(request: Request) -> Searcher:
    get_engine(request)
    return request.app.state.searcher


def require_client(request: Request) -> Principal:
    """Authenticate (401/403), then charge the client's rate limit (429 with Retry-After)."""
    settings = request.app.state.settings
    principal = authenticate(request, settings.api_key_hashes)
    allowed, retry_after = request.app.state.limiter.take(principal.id)
    if not allowed:
        raise HTTPException(429, detail=f"rate limit of {settings.rate_limit_per_minute} requests per minute exceeded",
                            headers={"Retry-After": str(retry_after)})
    request.state.principal = principal.id
    return principal


def require_admin(request: Request) -> None:
    settings = request.app.state.settings
    authorize_admin(request, settings.admin_key_hashes, production=settings.env == "production")


EngineDep = Annotated[Engine, Depends(get_engine)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]
ClientDep = Annotated[Principal, Depends(require_client)]
AdminDep = Annotated[None, Depends(require_admin)]
