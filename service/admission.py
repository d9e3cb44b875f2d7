"""Admission of ``POST /rerank`` by cost, so that a few large requests cannot starve everyone else.

Cost = pairs x tokens: for each document, the estimated tokens of query + document (characters / 4,
at most ``MAX_PAIR_TOKENS``, what a cross-encoder reads). Three checks, in order:

* one request over ``max_request_cost`` -> 413 (the documented maximum, ``SEARCH_RERANK_MAX_REQUEST_COST``);
* the client already holding ``client_share`` of the in-flight budget -> 429 with Retry-After;
* the in-flight total over ``max_inflight_cost`` -> 503 with Retry-After.

Example::

    admission = RerankAdmission(max_request_cost=256_000, max_inflight_cost=512_000, client_share=0.5)
    with admission.admit("key:abc", rerank_cost("query", texts)):
        scores = rerank(...)
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import defaultdict
from typing import Iterator, Sequence

from fastapi import HTTPException

MAX_PAIR_TOKENS = 512
CHARS_PER_TOKEN = 4


def rerank_cost(query: str, documents: Sequence[str]) -> int:
    """Estimated pairs x tokens of scoring ``documents`` against ``query``."""
    q = len(query) / CHARS_PER_TOKEN
    return sum(min(MAX_PAIR_TOKENS, math.ceil(q + len(d) / CHARS_PER_TOKEN) + 3) for d in documents)


class RerankAdmission:
    """In-flight cost per client and in total (thread-safe; held for the duration of a request)."""

    def __init__(self, max_request_cost: int, max_inflight_cost: int, client_share: float, retry_after_s: int = 1):
        self.max_request_cost, self.max_inflight_cost = max_request_cost, max_inflight_cost
        self.client_budget = max(1, int(max_inflight_cost * client_share))
        self.retry_after_s = retry_after_s
        self._held: dict[str, int] = defaultdict(int)
        self._total = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._total

    @contextlib.contextmanager
    def admit(self, client: str, cost: int) -> Iterator[None]:
        """Hold ``cost`` for ``client`` within the block, or raise the HTTP error that says why not."""
        if cost > self.max_request_cost:
            raise HTTPException(413, detail=f"this rerank request costs {cost} (pairs x tokens); the maximum is "
                                            f"{self.max_request_cost} (rerank_max_request_cost): send fewer or shorter documents")
        retry = {"Retry-After": str(self.retry_after_s)}
        with self._lock:
            held = self._held[client]
            if held and held + cost > self.client_budget:
                raise HTTPException(429, detail=f"your reranking in flight ({held} + {cost}) would exceed your share "
                                                f"of {self.client_budget}; retry when a request finishes", headers=retry)
            if self._total and self._total + cost > self.max_inflight_cost:
                raise HTTPException(503, detail="the reranker is at capacity; retry shortly", headers=retry)
            self._held[client] += cost
            self._total += cost
        try:
            yield
        finally:
            with self._lock:
                self._total -= cost
                self._held[client] -= cost
                if self._held[client] <= 0:
                    del self._held[client]
