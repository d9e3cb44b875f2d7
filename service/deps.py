"""FastAPI dependencies (tests swap them with ``app.dependency_overrides``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.auth import Principal, authenticate, authorize_admin, client_address
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


def charge(request: Request, client: str, cost: float = 1.0, already: float = 0.0) -> None:
    """Take ``cost`` tokens from ``client``'s bucket, else 429 with Retry-After; at most what a full bucket
    holds less ``already`` (tokens this request has taken), so that a costly request can pass once per refill."""
    settings = request.app.state.settings
    limiter = request.app.state.limiter
    if cost <= 0 or not limiter.enabled or already >= limiter.burst:
        return
    allowed, retry_after = limiter.take(client, max(min(cost, limiter.burst - already), 0.0))
    if not allowed:
        raise HTTPException(429, detail=f"rate limit of {settings.rate_limit_per_minute} tokens per minute exceeded "
                                        f"(a search costs one token per query per {settings.rate_limit_k_unit} hits asked for)",
                            headers={"Retry-After": str(retry_after)})


def search_cost(request: Request, queries: int, k: int) -> int:
    """Tokens a search costs: queries x ceil(k / rate_limit_k_unit)."""
    return queries * -(-k // request.app.state.settings.rate_limit_k_unit)


def require_client(request: Request) -> Principal:
    """Authenticate (401/403, charged to the client address), then charge the client's rate limit (429)."""
    settings = request.app.state.settings
    try:
        principal = authenticate(request, settings.api_key_hashes, production=settings.env == "production")
    except HTTPException:
        charge(request, f"addr:{client_address(request)}")  # guessing keys is rate limited too
        raise
    charge(request, principal.id)
    request.state.principal = principal.id
    return principal


def require_admin(request: Request) -> None:
    settings = request.app.state.settings
    authorize_admin(request, settings.admin_key_hashes, production=settings.env == "production")


EngineDep = Annotated[Engine, Depends(get_engine)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]
ClientDep = Annotated[Principal, Depends(require_client)]
AdminDep = Annotated[None, Depends(require_admin)]
