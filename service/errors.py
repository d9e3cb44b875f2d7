"""Domain errors mapped to HTTP status codes, once; every error response is ``{"detail": ...}``.

In production, error texts leave without the index root (or any absolute path), Java exception
text or stack lines (:func:`public_detail`); the server log keeps the full message.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.core.errors import (
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


_JAVA = re.compile(r"(JVM exception occurred:.*|\b(?:java|javax|jdk|sun|org\.apache|io\.anserini|jnius)\.[\w.$]+.*)")
_ABS_PATH = re.compile(r"(?<![\w:/])/(?:[\w.-]+/){2,}[\w.-]*")


def public_detail(request: Request, text: str) -> str:
    """``text`` as a client may see it: unchanged in development; in production its first line, with
    the configured folders, other absolute paths and Java exception text replaced."""
    settings = getattr(request.app.state, "settings", None)
    if settings is None or settings.env != "production":
        return text
    text = (text.splitlines() or [""])[0]
    for folder, name in ((settings.index_root, "<index root>"), (settings.models_dir, "<models>"), (settings.data_dir, "<data>")):
        for form in sorted({str(folder), str(Path(folder).resolve())}, key=len, reverse=True):
            text = text.replace(form, name)
    text = _JAVA.sub("an index or search-engine error (details in the server log)", text)
    return _ABS_PATH.sub("<path>", text)


def status_for(exc: PipelineError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 503  # a stage failed: the service is (temporarily) unable, not the client's fault


def _encodable(value):
    """Validation errors echo the input: a lone surrogate there must not break the 422 itself (it would become a 400)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _encodable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_encodable(v) for v in value)
    return value


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
        return JSONResponse({"detail": public_detail(request, str(exc))}, status_code=code)

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        count(HTTP_KINDS[400])
        return JSONResponse({"detail": public_detail(request, str(exc))}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code != 413:  # counted where the body limit is enforced
            count(HTTP_KINDS.get(exc.status_code, f"http_{exc.status_code}"))
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        count(HTTP_KINDS[422])
        return await request_validation_exception_handler(request, RequestValidationError(_encodable(exc.errors())))
