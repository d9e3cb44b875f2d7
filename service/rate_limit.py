"""Per-client token buckets: ``rate`` tokens per minute with a burst; over it -> 429 + Retry-After.

:class:`RateLimiter` is in-process; :class:`RedisRateLimiter` keeps the buckets in Redis so that
N worker processes allow the limit once, not N times (``build_limiter`` picks one from the settings).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per client id.

    Example::

        limiter = RateLimiter(per_minute=60, burst=5)
        allowed, retry_after_s = limiter.take("key:abc")
    """

    def __init__(self, per_minute: int, burst: int, max_clients: int = 100_000, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, client: str, cost: float = 1.0) -> tuple[bool, int]:
        """``(allowed, retry_after_seconds)``; a request costing more than the burst is charged the burst."""
        if not self.enabled:
            return True, 0
        cost = min(cost, float(self.burst))
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= self.max_clients:
                    self._evict(now)
                bucket = self._buckets[client] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return True, 0
            return False, max(1, math.ceil((cost - bucket.tokens) / self.rate))

    def _evict(self, now: float) -> None:
        """Drop buckets that have refilled completely (idle clients); then the oldest half if still full."""
        full = [c for c, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for client in full:
            del self._buckets[client]
        if len(self._buckets) >= self.max_clients:
            for client in sorted(self._buckets, key=lambda c: self._buckets[c].updated)[: self.max_clients // 2]:
                del self._buckets[client]


_TAKE = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(b[1]) or burst
local updated = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local ok = 0
if tokens >= cost then tokens = tokens - cost; ok = 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {ok, tostring(tokens)}
"""


class RedisRateLimiter(RateLimiter):
    """The same token buckets kept in Redis (one Lua call per request, Redis's clock), so that every
    worker process and replica shares one limit. Redis unreachable: the in-process buckets take over
    (each process then enforces the limit on its own) until ``retry_s`` has passed.
    """

    def __init__(self, per_minute: int, burst: int, url: str, namespace: str, timeout_s: float = 0.05,
                 retry_s: float = 2.0):
        import redis

        super().__init__(per_minute, burst)
        self._errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._script = self.client.register_script(_TAKE)
        self.prefix, self.retry_s, self._down_until = f"{namespace}:rl:", retry_s, 0.0

    def take(self, client: str, cost: float = 1.0) -> tuple[bool, int]:
        if not self.enabled:
            return True, 0
        if time.monotonic() < self._down_until:
            return super().take(client, cost)
        cost = min(cost, float(self.burst))
        try:
            ok, left = self._script(keys=[self.prefix + client], args=[self.rate, self.burst, cost])
        except self._errors:
            self._down_until = time.monotonic() + self.retry_s
            return super().take(client, cost)
        if int(ok):
            return True, 0
        return False, max(1, math.ceil((cost - float(left)) / self.rate))


def build_limiter(settings) -> RateLimiter:
    """Redis-backed when ``settings.redis_url`` is set (shared by all workers), else in-process."""
    if settings.redis_url and settings.rate_limit_per_minute:
        return RedisRateLimiter(settings.rate_limit_per_minute, settings.burst, settings.redis_url, settings.cache_namespace,
                                settings.redis_timeout_s, settings.redis_retry_s)
    return RateLimiter(settings.rate_limit_per_minute, settings.burst)
