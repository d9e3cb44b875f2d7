"""The micro-batcher: concurrent calls share batches, each caller gets its own results."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.runtime.micro_batch import MicroBatcher


def run_threads(n, target):
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def test_concurrent_calls_share_batches_and_get_their_own_results():
    sizes = []

    def square(items):
        sizes.append(len(items))
        time.sleep(0.02)
        return [x * x for x in items]

    batcher = MicroBatcher(square, max_items=1000, max_wait_ms=50)
    out = {}
    run_threads(8, lambda i: out.__setitem__(i, batcher([i * 10 + j for j in range(5)], timeout=5)))
    assert out == {i: [(i * 10 + j) ** 2 for j in range(5)] for i in range(8)}
    assert batcher.stats.requests == 8 and sum(sizes) == 40
    assert batcher.stats.batches < 8, f"no batching happened: {sizes}"
    batcher.close()


def test_batches_respect_max_items_and_never_split_a_request():
    sizes = []
    batcher = MicroBatcher(lambda items: (sizes.append(len(items)), items)[1], max_items=10, max_wait_ms=30)
    results = {}
    run_threads(6, lambda i: results.__setitem__(i, batcher([i] * 4, timeout=5)))
    assert all(results[i] == [i] * 4 for i in range(6))
    assert all(s <= 10 and s % 4 == 0 for s in sizes)
    assert batcher([7] * 25, timeout=5) == [7] * 25  # larger than max_items: taken whole
    batcher.close()


def test_error_reaches_every_caller_of_the_batch():
    def boom(items):
        time.sleep(0.02)
        raise RuntimeError("model exploded")

    batcher = MicroBatcher(boom, max_wait_ms=30)
    errors = []

    def call(i):
        try:
            batcher([i], timeout=5)
        except RuntimeError as exc:
            errors.append(str(exc))

    run_threads(4, call)
    assert errors == ["model exploded"] * 4
    batcher.close()


def test_wrong_result_count_is_an_error():
    batcher = MicroBatcher(lambda items: items[:-1], max_wait_ms=0)
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        batcher([1, 2], timeout=5)
    batcher.close()


def test_timeout_cancels_a_request_that_has_not_started():
    started = threading.Event()
    calls = []

    def slow(items):
        calls.append(list(items))
        started.set()
        time.sleep(0.3)
        return items

    batcher = MicroBatcher(slow, max_items=1, max_wait_ms=0)
    first = batcher.submit(["a"])
    assert started.wait(5)
    with pytest.raises(TimeoutError):
        batcher(["b"], timeout=0.05)  # queued behind "a": cancelled before it runs
    assert first.result(5) == ["a"]
    time.sleep(0.1)
    assert calls == [["a"]] and batcher.stats.cancelled == 1
    batcher.close()


def test_empty_request_and_close():
    batcher = MicroBatcher(lambda items: items)
    assert batcher([], timeout=1) == []
    assert batcher.stats.batches == 0
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit([1])
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: items, max_items=0)
