"""Per-client token buckets: ``rate`` requests per minute with a burst; over it -> 429 + Retry-After.

In-process: with several worker processes each enforces the limit on its own share.
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
