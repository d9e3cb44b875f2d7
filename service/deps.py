"""FastAPI dependencies (tests swap them with ``app.dependency_overrides``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.engine import Engine


def get_engine(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise HTTPException(status_code=503, detail="the service is still loading")
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]
