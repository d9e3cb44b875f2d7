"""Health, readiness, pipelines, metrics, served index versions and the admin reload."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.deps import AdminDep, ClientDep, EngineDep
from service.errors import public_detail
from service.schemas import ErrorResponse, PipelineStatus, ReloadResponse

router = APIRouter()

CLIENT_ERRORS = {
    401: {"model": ErrorResponse, "description": "Missing API key"},
    403: {"model": ErrorResponse, "description": "Invalid API key"},
    429: {"model": ErrorResponse, "description": "Rate limit exceeded (see Retry-After)"},
    503: {"model": ErrorResponse, "description": "The service is still loading"},
}

ADMIN_ERRORS = {
    401: {"model": ErrorResponse, "description": "Missing admin key"},
    403: {"model": ErrorResponse, "description": "Invalid admin key, or admin endpoints disabled"},
    503: {"model": ErrorResponse, "description": "The service is still loading"},
}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(request: Request):
    """Readiness: pipelines are loaded, at least one can serve, and no served index version is damaged."""
    engine = getattr(request.app.state, "engine", None)
    if engine is None or not engine.ready():
        return JSONResponse({"status": "not ready"}, status_code=503)
    damaged = await request.app.state.workers.run(engine.damaged)
    if damaged:
        return JSONResponse({"status": "not ready: served index damaged", "damaged": sorted(damaged)}, status_code=503)
    return {"status": "ready", "collections": {n: sorted(s.pipelines) for n, s in engine.collections.items()}}


@router.get("/pipelines", response_model=list[PipelineStatus], responses=CLIENT_ERRORS)
async def pipelines(request: Request, engine: EngineDep, client: ClientDep) -> list[PipelineStatus]:
    """Every configured pipeline per collection: loaded, or off with the reason (needs a key when keys are set)."""
    out = []
    for name, state in engine.collections.items():
        for p in engine.config.pipelines:
            desc = engine.config.pipelines[p].description
            if p in state.pipelines:
                out.append(PipelineStatus(name=p, collection=name, loaded=True, description=desc,
                                          notes=state.pipelines[p].notes(), fast_path=state.pipelines[p].fast_path()))
            elif p in state.off:
                out.append(PipelineStatus(name=p, collection=name, loaded=False, reason=public_detail(request, state.off[p]),
                                          description=desc))
    return out


@router.get("/indexes", responses=CLIENT_ERRORS)
async def indexes(engine: EngineDep, client: ClientDep) -> dict[str, dict[str, str]]:
    """The index versions being served, per collection (needs a key when keys are set)."""
    return engine.served_versions()


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus exposition format."""
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.post("/admin/reload", response_model=ReloadResponse, responses=ADMIN_ERRORS)
async def reload(request: Request, engine: EngineDep, admin: AdminDep) -> ReloadResponse:
    """Load newly published index versions and swap them in; corrupt ones are refused (see ``refused``)."""
    report = await request.app.state.workers.run(request.app.state.reloader.reload)
    return ReloadResponse(swapped=report.swapped, unchanged=report.unchanged, refused=report.refused, fallback=report.fallback,
                          versions=engine.served_versions())
