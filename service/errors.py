"""Domain errors mapped to HTTP status codes, once."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pipeline.errors import (
    ConfigError,
    IndexCorruptError,
    IndexNotFoundError,
    PipelineError,
    StageContractError,
    UnknownCollectionError,
    UnknownPipelineError,
)

logger = logging.getLogger(__name__)

STATUS = {
    UnknownPipelineError: 404,
    UnknownCollectionError: 404,
    ConfigError: 400,
    StageContractError: 400,
    IndexNotFoundError: 503,
    IndexCorruptError: 503,
}


def status_for(exc: PipelineError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 503  # a stage failed: the service is (temporarily) unable, not the client's fault


def install(app: FastAPI) -> None:
    @app.exception_handler(PipelineError)
    async def _pipeline_error(request: Request, exc: PipelineError) -> JSONResponse:
        code = status_for(exc)
        if code >= 500:
            logger.error("request failed: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)
