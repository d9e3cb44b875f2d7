"""API-key and admin-key checks (keys are configured as SHA-256 digests, compared in constant time).

A key comes in ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Missing -> 401 with
``WWW-Authenticate``; present but unknown -> 403. With no keys configured (development) every
request passes and is identified by its client address for rate limiting. In production a key
that matches but is too weak (:func:`service.keys.key_weakness`) is refused with 403 as well.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request

from service.keys import key_weakness
from service.settings import hash_key


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``key:<digest prefix>`` or ``addr:<client address>``."""

    id: str
    authenticated: bool


def presented_key(request: Request, header: str = "x-api-key") -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    value = request.headers.get(header)
    return value.strip() if value and value.strip() else None


def match_digest(key: str, digests: list[str]) -> str | None:
    """The configured digest ``key`` hashes to, or None; every digest is compared (constant time)."""
    candidate = hash_key(key)
    found = None
    for digest in digests:
        if hmac.compare_digest(candidate, digest):
            found = digest
    return found


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _refuse_weak(key: str, production: bool, what: str) -> None:
    weakness = key_weakness(key) if production else None
    if weakness:
        raise HTTPException(403, detail=f"this {what} is too weak for production (it {weakness}): "
                                         "issue a new one with `python -m service --new-key`")


def authenticate(request: Request, digests: list[str], production: bool = False) -> Principal:
    if not digests:
        return Principal(f"addr:{client_address(request)}", authenticated=False)
    key = presented_key(request)
    if key is None:
        raise HTTPException(401, detail="missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    digest = match_digest(key, digests)
    if digest is None:
        raise HTTPException(403, detail="invalid API key")
    _refuse_weak(key, production, "API key")
    return Principal(f"key:{digest[:12]}", authenticated=True)


def authorize_admin(request: Request, digests: list[str], production: bool) -> None:
    """Admin endpoints: an admin key in ``X-Admin-Key`` (or Bearer); open only in development without admin keys."""
    if not digests:
        if production:
            raise HTTPException(403, detail="admin endpoints are disabled: set SEARCH_ADMIN_KEY_HASHES")
        return
    key = presented_key(request, header="x-admin-key")
    if key is None:
        raise HTTPException(401, detail="missing admin key: send 'X-Admin-Key: <key>'", headers={"WWW-Authenticate": "Bearer"})
    if match_digest(key, digests) is None:
        raise HTTPException(403, detail="invalid admin key")
    _refuse_weak(key, production, "admin key")
