"""Service settings from the environment (prefix ``SEARCH_``); nothing is read at import time.

``SEARCH_ENV=production`` turns on a validator that refuses insecure defaults (no API keys,
no admin key or a well-known one, CORS ``*``, no rate limit). The development default stays
open so that ``./scripts/serve.sh`` works without keys.

API keys are configured as SHA-256 hex digests, never in clear: ``python -m service
--hash-key KEY`` prints the digest of a key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.core.settings_paths import default_config_path, default_data_dir, default_index_root, default_models_dir

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
MAX_RATE_PER_MINUTE = 60_000
MAX_BURST = 10_000
WEAK_ADMIN_KEYS = ("admin", "changeme", "change-me", "changethis", "secret", "password", "dev", "test")
"""Keys whose digest a production admin key must not have."""


def hash_key(key: str) -> str:
    """The stored form of an API key: SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class InsecureSettingsError(ValueError):
    """The production profile was asked to start with an insecure setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEARCH_", env_file=None, extra="ignore", hide_input_in_errors=True)
    """``hide_input_in_errors``: a clear key put in a digest list by mistake is never echoed (issue 21, finding 12)."""

    env: Literal["development", "production"] = "development"
    config: Path = Field(default_factory=default_config_path)
    index_root: Path = Field(default_factory=default_index_root)
    models_dir: Path = Field(default_factory=default_models_dir)
    data_dir: Path = Field(default_factory=default_data_dir)
    collections: list[str] = ["scifact"]
    """Collections served; the first is the default of a request without ``collection``."""
    pipelines: list[str] | None = None
    """Pipelines to load (default: every pipeline in the config with serve_by_default, i.e. not the FIRST ones)."""
    stage_plugins: list[str] = []
    """Extra modules imported before the config is read (they call ``register_stage``)."""
    max_query_chars: int = Field(default=2048, ge=1)
    max_k: int = Field(default=1000, ge=1)
    max_batch: int = Field(default=64, ge=1, le=1000)
    """Most queries in one ``POST /search/batch``."""
    snippet_chars: int = Field(default=0, ge=0)
    """Truncate returned texts to this many characters (0: full text)."""
    worker_threads: int = Field(default=64, ge=1, le=256)
    """Threads running blocking search work. Enough for every concurrent request: a reranker's time budget
    starts when its call does, so a request queued for a thread would wait beyond it; idle threads cost little."""

    # access
    api_key_hashes: list[str] = []
    """SHA-256 hex digests of the accepted API keys; empty: no key needed (development only)."""
    admin_key_hashes: list[str] = []
    """Digests of the admin keys (``POST /admin/reload``); empty: admin endpoints open in development, off in production."""
    rate_limit_per_minute: int = Field(default=0, ge=0)
    """Requests per minute per API key (per client address without keys); 0: no limit."""
    rate_limit_burst: int = Field(default=0, ge=0)
    """Requests a client may send at once before the rate applies (0: a tenth of a minute's worth)."""
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    cors_origins: list[str] = ["*"]
    trusted_proxies: list[str] = []
    """Addresses or networks (``10.0.0.0/8``) whose ``X-Forwarded-For`` is believed; empty: none (the peer address counts)."""
    rate_limit_k_unit: int = Field(default=100, ge=1)
    """A search costs one rate-limit token per query per ``k_unit`` hits asked for (64 queries at k=1000: 640)."""

    # rerank admission (service/admission.py): cost = pairs x tokens (tokens ~ characters / 4, at most 512 per pair)
    rerank_max_request_cost: int = Field(default=256_000, ge=1)
    """Documented maximum of one ``/rerank`` request (e.g. 1,000 documents of ~1,000 characters); over it: 413."""
    rerank_max_inflight_cost: int = Field(default=512_000, ge=1)
    """Total cost of ``/rerank`` requests running at once; over it: 503 with Retry-After."""
    rerank_client_share: float = Field(default=0.5, gt=0, le=1)
    """Share of ``rerank_max_inflight_cost`` one client may hold at once; over it: 429 with Retry-After."""

    # cache
    redis_url: str | None = None
    """e.g. ``redis://127.0.0.1:6379/0``; unset: an in-process LRU."""
    cache_ttl_s: int = Field(default=300, ge=0)
    """Lifetime of a cached result; 0 turns the result cache off."""
    cache_max_entries: int = Field(default=10_000, ge=1)
    cache_namespace: str = Field(default="ns", pattern=r"^[A-Za-z0-9_.:-]{1,40}$")
    redis_timeout_s: float = Field(default=0.05, gt=0, le=5)
    redis_retry_s: float = Field(default=2.0, gt=0, le=600)
    """After a Redis error the cache is bypassed for this long, then reconnects."""

    # index lifecycle
    reload_poll_s: float = Field(default=0.0, ge=0)
    """Check the published ``current`` versions every N seconds and swap on change (0: only the admin endpoint)."""
    health_poll_s: float = Field(default=2.0, gt=0, le=60)
    """Without ``reload_poll_s``: how often served index files are checked for in-place damage (and leases refreshed)."""

    # rerank endpoint
    rerank_pipelines: list[str] | None = None
    """Pipelines whose last stage ``POST /rerank`` may use (``model`` field); default: every loaded one ending in a reranker."""
    max_rerank_documents: int = Field(default=1000, ge=1, le=10_000)

    # logging
    log_json: bool = True
    keep_alive_s: float = Field(default=75.0, gt=0, le=3600)
    """Idle keep-alive of client connections (uvicorn's default is 5 s, the same as common HTTP clients'
    pool expiry, so a client could reuse a connection the server was closing: a rare ReadError under load)."""
    log_level: str = "INFO"

    @field_validator("api_key_hashes", "admin_key_hashes")
    @classmethod
    def _digests(cls, value: list[str]) -> list[str]:
        out = [v.strip().lower() for v in value]
        bad = [f"entry {i + 1} ({len(v)} characters)" for i, v in enumerate(out) if not _HEX64.match(v)]
        if bad:  # never echo the entry: it may be a clear key put here by mistake
            raise ValueError(f"key digests must be 64 hex characters (python -m service --hash-key KEY); "
                             f"not a digest: {', '.join(bad)}")
        return out

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for v in value:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise ValueError(f"SEARCH_TRUSTED_PROXIES: {v!r} is not an address or network") from None
        return value

    @model_validator(mode="after")
    def _production_is_locked_down(self) -> "Settings":
        if self.env != "production":
            return self
        problems = []
        if not self.api_key_hashes:
            problems.append("SEARCH_API_KEY_HASHES is empty (the API would be open)")
        if not self.admin_key_hashes:
            problems.append("SEARCH_ADMIN_KEY_HASHES is empty")
        weak = {hash_key(k) for k in WEAK_ADMIN_KEYS}
        if weak & set(self.admin_key_hashes) or weak & set(self.api_key_hashes):
            problems.append("a key is a well-known default (e.g. 'changeme')")
        if set(self.admin_key_hashes) & set(self.api_key_hashes):
            problems.append("an API key is also an admin key")
        if "*" in self.cors_origins:
            problems.append("SEARCH_CORS_ORIGINS allows every origin ('*')")
        if "null" in self.cors_origins:
            problems.append("SEARCH_CORS_ORIGINS allows the 'null' origin (sandboxed frames and file: pages)")
        odd = [o for o in self.cors_origins if o not in ("*", "null") and not _ORIGIN.match(o)]
        if odd:
            problems.append(f"SEARCH_CORS_ORIGINS has entries that are not an origin like https://app.example: {odd}")
        if self.rate_limit_per_minute == 0:
            problems.append("SEARCH_RATE_LIMIT_PER_MINUTE is 0 (no limit)")
        if self.rate_limit_per_minute > MAX_RATE_PER_MINUTE:
            problems.append(f"SEARCH_RATE_LIMIT_PER_MINUTE is over {MAX_RATE_PER_MINUTE} (no limit in effect)")
        if self.burst > MAX_BURST:
            problems.append(f"SEARCH_RATE_LIMIT_BURST is over {MAX_BURST}")
        if problems:
            raise InsecureSettingsError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def burst(self) -> int:
        return self.rate_limit_burst or max(1, self.rate_limit_per_minute // 10)
