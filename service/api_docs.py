"""``/docs`` (Swagger UI) and ``/redoc`` served from files installed with the service: no CDN, so they
work offline and behind a firewall.

The assets (Swagger UI 5, which renders OpenAPI 3.1, and ReDoc) come from the ``fastapi-offline``
wheel, a core dependency; only its static folder is used.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"


def assets_dir() -> Path:
    """The folder holding ``swagger-ui-bundle.js``, ``swagger-ui.css`` and ``redoc.standalone.js``."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def mount_api_docs(app: FastAPI, title: str, keyed: list | None = None) -> None:
    """Add ``/docs``, its OAuth2 redirect and ``/redoc``; create ``app`` with ``docs_url=None, redoc_url=None``.

    ``keyed`` (production): dependencies that demand an API key; ``/openapi.json`` is then served here behind
    them too (create the app with ``openapi_url=None``), so the API description is not public.
    """
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    if keyed:
        @app.get("/openapi.json", include_in_schema=False, dependencies=keyed)
        async def openapi() -> dict:
            return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=keyed)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} - API",
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS_URL}/favicon.png")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False, dependencies=keyed)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{title} - ReDoc", redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False)
