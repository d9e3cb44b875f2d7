"""Domain errors mapped to HTTP status codes, once; every error response is ``{"detail": ...}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.errors import (
    ConfigError,
    IndexCorruptError,
    IndexNotFoundError,
    PipelineError,
    StageContractError,
    UnknownCollectionError,
    UnknownPipelineError,
)
from service.rerank_api import DocumentTooLongError

logger = logging.getLogger(__name__)


class RerankerUnavailableError(PipelineError):
    """``/rerank`` was called but no usable reranker is loaded (503)."""


STATUS = {
    UnknownPipelineError: 404,
    UnknownCollectionError: 404,
    ConfigError: 400,
    StageContractError: 400,
    IndexNotFoundError: 503,
    IndexCorruptError: 503,
    RerankerUnavailableError: 503,
    DocumentTooLongError: 422,
}

HTTP_KINDS = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              413: "body_too_large", 422: "validation", 429: "rate_limited", 503: "unavailable"}


def status_for(exc: PipelineError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 503  # a stage failed: the service is (temporarily) unable, not the client's fault


def install(app: FastAPI) -> None:
    def count(kind: str) -> None:
        metrics = getattr(app.state, "metrics", None)
        if metrics is not None:
            metrics.errors.labels(kind).inc()

    @app.exception_handler(PipelineError)
    async def _pipeline_error(request: Request, exc: PipelineError) -> JSONResponse:
        code = status_for(exc)
        count(HTTP_KINDS.get(code, f"http_{code}"))  # one vocabulary for every error kind; the class is in the log
        if code >= 500:
            logger.error("request failed: %s: %s", type(exc).__name__, exc)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        count(HTTP_KINDS[400])
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code != 413:  # counted where the body limit is enforced
            count(HTTP_KINDS.get(exc.status_code, f"http_{exc.status_code}"))
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        count(HTTP_KINDS[422])
        return await request_validation_exception_handler(request, exc)
