"""Result and query-embedding caches: Redis when configured, else an in-process LRU.

Keys hash the query exactly as the pipeline sees it (whitespace collapsed, nothing else:
:meth:`Searcher.run` gives the pipeline the same text) with everything that changes an answer: the pipeline's
config hash, the versions of the indexes it reads, ``k``, collection and language. A new
index version therefore never serves an old result, and no explicit purge is needed.

Redis going away never fails a search: the error is counted and logged once, the cache is
bypassed for ``retry_s`` seconds, then the next request tries again (redis-py reconnects).

Example::

    cache = Cache(LRUBackend(1000))
    key = result_key("ns", "What is BM25?", "bm25", "abc123", {"lucene": "v1"}, 10, "scifact", None)
    cache.set_json("results", key, {"hits": []}, ttl_s=60)
    cache.get_json("results", key)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
from cachetools import TLRUCache

logger = logging.getLogger(__name__)

Outcome = Callable[[str, str], None]
"""``(cache_kind, outcome)`` with outcome ``hit``, ``miss``, ``bypass`` or ``error``."""


class CacheUnavailable(Exception):
    """The cache backend cannot answer now; the caller bypasses it."""


class Backend(Protocol):
    name: str

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_s: int) -> None: ...

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...


def _expiry(key: str, item: tuple[int, bytes], now: float) -> float:
    ttl_s = item[0]
    return now + ttl_s if ttl_s else math.inf


class LRUBackend:
    """Thread-safe in-process LRU with per-entry expiry (the embedded default): ``cachetools.TLRUCache``
    (a TTLCache whose time to live is set per entry, as the Redis backend's is); ``ttl_s=0`` never expires."""

    name = "memory"

    def __init__(self, max_entries: int = 10_000, timer: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self._data: TLRUCache = TLRUCache(maxsize=max_entries, ttu=_expiry, timer=timer)
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._data.get(key)
        return item[1] if item is not None else None

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.get(k) for k in keys]

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        with self._lock:
            self._data[key] = (ttl_s, value)

    def __len__(self) -> int:
        with self._lock:
            self._data.expire()
            return len(self._data)


class RedisBackend:
    """Redis with short timeouts and a circuit breaker: down -> bypass for ``retry_s``, then retry."""

    name = "redis"

    def __init__(self, url: str, timeout_s: float = 0.2, retry_s: float = 2.0, on_error: Callable[[str], None] | None = None):
        import redis

        self._redis = redis
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self.url, self.retry_s = _redact(url), retry_s
        self._on_error = on_error or (lambda op: None)
        self._down_until = 0.0
        self._down = False
        self._lock = threading.Lock()

    def _call(self, op: str, fn: Callable[[], Any]) -> Any:
        if self._down and time.monotonic() < self._down_until:
            raise CacheUnavailable(f"redis at {self.url} is down; retrying in {self._down_until - time.monotonic():.1f}s")
        try:
            out = fn()
        except (self._redis.RedisError, OSError) as exc:
            self._on_error(op)
            with self._lock:
                if not self._down:
                    logger.warning("redis cache at %s failed (%s): bypassing it for %.1fs", self.url, exc, self.retry_s)
                self._down, self._down_until = True, time.monotonic() + self.retry_s
            raise CacheUnavailable(str(exc)) from exc
        if self._down:
            with self._lock:
                if self._down:
                    logger.warning("redis cache at %s is back", self.url)
                self._down = False
        return out

    def get(self, key: str) -> bytes | None:
        return self._call("get", lambda: self.client.get(key))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._call("get", lambda: self.client.mget(list(keys))) if keys else []

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._call("set", lambda: self.client.set(key, value, ex=ttl_s or None))

    @property
    def available(self) -> bool:
        return not self._down


class Cache:
    """A backend plus outcome accounting; never raises on backend failure."""

    def __init__(self, backend: Backend, on_outcome: Outcome | None = None):
        self.backend = backend
        self.on_outcome = on_outcome or (lambda kind, outcome: None)

    def get_json(self, kind: str, key: str) -> Any | None:
        return self.get_many_json(kind, [key])[0]

    def get_many_json(self, kind: str, keys: Sequence[str]) -> list[Any | None]:
        try:
            raw = self.backend.get_many(keys)
        except CacheUnavailable:
            for _ in keys:
                self.on_outcome(kind, "bypass")
            return [None] * len(keys)
        out = []
        for value in raw:
            self.on_outcome(kind, "hit" if value is not None else "miss")
            out.append(json.loads(value) if value is not None else None)
        return out

    def set_json(self, kind: str, key: str, value: Any, ttl_s: int) -> None:
        try:
            self.backend.set(key, json.dumps(value, separators=(",", ":")).encode(), ttl_s)
        except CacheUnavailable:
            self.on_outcome(kind, "bypass")


class QueryEmbeddingCache:
    """Query vectors by (model identity, text), shared by dense stages through the build context.

    A dense stage finds it with ``ctx.shared(QUERY_EMBEDDING_CACHE, lambda: None)``::

        cached = cache.get_many("minilm@sha", texts)       # {text: vector}
        cache.set_many("minilm@sha", missing, vectors)
    """

    def __init__(self, cache: Cache, namespace: str = "ns", ttl_s: int = 86_400):
        self.cache, self.namespace, self.ttl_s = cache, namespace, ttl_s

    def _key(self, model: str, text: str) -> str:
        digest = hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()  # exactly what the encoder sees
        return f"{self.namespace}:emb:{digest}"

    def get_many(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        keys = [self._key(model, t) for t in texts]
        try:
            raw = self.cache.backend.get_many(keys)
        except CacheUnavailable:
            for _ in texts:
                self.cache.on_outcome("embeddings", "bypass")
            return {}
        out = {}
        for text, value in zip(texts, raw, strict=True):
            self.cache.on_outcome("embeddings", "hit" if value is not None else "miss")
            if value is not None:
                out[text] = np.frombuffer(value, dtype=np.float32)
        return out

    def set_many(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        for text, vector in zip(texts, np.asarray(vectors, dtype=np.float32), strict=True):
            try:
                self.cache.backend.set(self._key(model, text), vector.tobytes(), self.ttl_s)
            except CacheUnavailable:
                self.cache.on_outcome("embeddings", "bypass")
                return


QUERY_EMBEDDING_CACHE = "query_embedding_cache"
"""Key of the :class:`QueryEmbeddingCache` in ``BuildContext.shared``."""


def normalise_query(text: str) -> str:
    """Collapsed whitespace, nothing else: the text the pipeline runs on and the cache key hashes.

    No NFKC or case folding: BM25's analyser does not fold full-width letters or ligatures, so a
    key folded more than the pipeline's input would let ``ｖｏｌｃａｎｏ`` (0 hits) fill the entry
    of ``volcano`` for every client (issue 21, finding 3).
    """
    return " ".join(text.split())


def result_key(
    namespace: str,
    query: str,
    pipeline: str,
    config_hash: str,
    versions: Mapping[str, str],
    k: int,
    collection: str,
    lang: str | None,
) -> str:
    payload = json.dumps(
        [normalise_query(query), pipeline, config_hash, sorted(versions.items()), k, collection, lang],
        ensure_ascii=False,
    )
    return f"{namespace}:res:{hashlib.sha256(payload.encode()).hexdigest()}"


def build_cache(settings: Any, on_outcome: Outcome | None = None, on_error: Callable[[str], None] | None = None) -> Cache:
    """Redis when ``settings.redis_url`` is set, else the in-process LRU."""
    if settings.redis_url:
        backend: Backend = RedisBackend(settings.redis_url, settings.redis_timeout_s, settings.redis_retry_s, on_error)
    else:
        backend = LRUBackend(settings.cache_max_entries)
    return Cache(backend, on_outcome)


def _redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1) if "://" in url else ("", url)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
