"""Group concurrent calls into shared batches (one forward pass for several requests).

A :class:`MicroBatcher` wraps a batch function ``fn(items) -> results`` (one result per
item, same order). Callers in different threads submit their own lists; a single worker
thread waits up to ``max_wait_ms`` for more requests, concatenates whatever is pending
(up to ``max_items``, a larger request is never split), calls ``fn`` once and hands each
caller its slice. A caller that gives up (timeout) cancels its request; a cancelled
request that has not started is skipped. Errors of ``fn`` reach every caller of that batch.

Example::

    batcher = MicroBatcher(model.score, max_items=1024, max_wait_ms=2)
    scores = batcher([("query", "passage"), ...], timeout=5.0)   # from any thread
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    """Counters for tests and metrics: how many calls shared how many batches."""

    requests: int = 0
    batches: int = 0
    items: int = 0
    cancelled: int = 0
    largest_batch: int = 0


@dataclass
class _Request(Generic[T, R]):
    items: list[T]
    future: Future = field(default_factory=Future)


class MicroBatcher(Generic[T, R]):
    """Thread-safe micro-batcher around a batch function (see the module docstring)."""

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], max_items: int = 1024, max_wait_ms: float = 2.0,
                 name: str = "micro-batcher"):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn, self.max_items, self.max_wait = fn, max_items, max_wait_ms / 1000.0
        self.name = name
        self.stats = BatchStats()
        self._pending: list[_Request[T, R]] = []
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    def submit(self, items: Sequence[T]) -> Future:
        """Queue one request; the future resolves to its results (a list, same order as ``items``)."""
        request: _Request[T, R] = _Request(list(items))
        if not request.items:
            request.future.set_result([])
            return request.future
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            self._pending.append(request)
            self.stats.requests += 1
            if self._worker is None:  # started on first use: no thread at construction
                self._worker = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._worker.start()
            self._cond.notify_all()
        return request.future

    def __call__(self, items: Sequence[T], timeout: float | None = None) -> list[R]:
        """Submit and wait; raises ``TimeoutError`` after ``timeout`` seconds (the request is cancelled)."""
        future = self.submit(items)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout as exc:
            if future.cancel():
                with self._cond:
                    self.stats.cancelled += 1
            raise TimeoutError(f"{self.name}: no result within {timeout:.3f} s") from exc

    def close(self) -> None:
        """Stop the worker after the batches already taken; pending requests fail."""
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, []
            self._cond.notify_all()
        for request in pending:
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(RuntimeError(f"{self.name} was closed"))

    def _take(self) -> list[_Request[T, R]] | None:
        """Block for the first request, then gather more until full or ``max_wait`` passed."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = time.monotonic() + self.max_wait
            while sum(len(r.items) for r in self._pending) < self.max_items:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken, size = [], 0
            while self._pending and (not taken or size + len(self._pending[0].items) <= self.max_items):
                request = self._pending.pop(0)
                if request.future.set_running_or_notify_cancel():
                    taken.append(request)
                    size += len(request.items)
            return taken

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            if not taken:
                continue
            items = [item for request in taken for item in request.items]
            with self._cond:
                self.stats.batches += 1
                self.stats.items += len(items)
                self.stats.largest_batch = max(self.stats.largest_batch, len(items))
            try:
                results = list(self.fn(items))
                if len(results) != len(items):
                    raise RuntimeError(f"{self.name}: batch function returned {len(results)} results for {len(items)} items")
            except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the error
                for request in taken:
                    request.future.set_exception(exc)
                continue
            start = 0
            for request in taken:
                request.future.set_result(results[start : start + len(request.items)])
                start += len(request.items)
