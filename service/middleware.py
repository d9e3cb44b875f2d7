"""ASGI middleware: request ids + access log + HTTP metrics, and the request body size limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from fastapi import HTTPException

from service.logging_config import request_id_var
from service.metrics import Metrics

logger = logging.getLogger("service.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


STATIC_PREFIXES = ("/static/", "/docs-assets/")


def route_label(scope) -> str:
    """The route template of a request for metrics: FastAPI's route, else a fixed path the app serves
    (``/openapi.json``, ``/docs``; also when a 413 answered before routing), a static folder, or ``unmatched``."""
    route = getattr(scope.get("route"), "path", None)
    if route:
        return route
    path = scope["path"]
    for prefix in STATIC_PREFIXES:
        if path.startswith(prefix):
            return prefix.rstrip("/")
    return path if path in _fixed_paths(scope.get("app")) else "unmatched"


def _fixed_paths(app) -> set[str]:
    """Paths without parameters that the app serves: its top-level routes and the OpenAPI paths (included
    routers are not listed in ``app.routes`` by every FastAPI version). Computed once per app."""
    if app is None:
        return set()
    cached = getattr(app.state, "fixed_paths", None)
    if cached is None:
        paths = {getattr(r, "path", None) for r in getattr(app, "routes", [])}
        paths |= set(app.openapi().get("paths", {})) if callable(getattr(app, "openapi", None)) else set()
        cached = app.state.fixed_paths = {p for p in paths if p and "{" not in p}
    return cached


class RequestContextMiddleware:
    """Gives every request an id (``X-Request-ID`` if sane, else a new one), echoes it, logs and counts the request."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500, "started": False}
        start = time.perf_counter()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - the last line of defence: log with the id, answer 500
            self.metrics.errors.labels("internal").inc()
            logger.exception("unexpected error in %s %s", scope["method"], scope["path"])
            if not status["started"]:
                body = json.dumps({"detail": "internal error; quote the X-Request-ID header when reporting it"}).encode()
                await send_with_id({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send_with_id({"type": "http.response.body", "body": body})
        finally:
            path = route_label(scope)
            self.metrics.http_requests.labels(scope["method"], path, str(status["code"])).inc()
            logger.info(
                "%s %s %d", scope["method"], scope["path"], status["code"],
                extra={"request_id": request_id, "method": scope["method"], "path": scope["path"], "status": status["code"],
                       "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                       "client": (scope.get("client") or ("", 0))[0]},
            )
            request_id_var.reset(token)


class BodyTooLarge(HTTPException):
    """The body streamed past the limit (raised from ``receive``; FastAPI turns it into the 413)."""

    def __init__(self, max_bytes: int):
        super().__init__(413, detail=f"request body is over the limit of {max_bytes} bytes")


class BodySizeLimitMiddleware:
    """413 for a body over ``max_bytes``: by ``Content-Length`` up front, or while a chunked body streams."""

    def __init__(self, app, max_bytes: int, metrics: Metrics):
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def _reject(self, send, count: bool = True) -> None:
        if count:
            self.metrics.errors.labels("body_too_large").inc()
        body = json.dumps({"detail": f"request body is over the limit of {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                return await self._reject(send)
        seen = {"bytes": 0, "started": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.max_bytes:
                    self.metrics.errors.labels("body_too_large").inc()
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                seen["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not seen["started"]:  # raised outside a FastAPI route: answer here
                await self._reject(send, count=False)
