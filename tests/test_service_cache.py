"""Result cache: keys, the in-process LRU, real Redis, and Redis going away (bypass, count, reconnect)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.cache import (
    Cache,
    CacheUnavailable,
    LRUBackend,
    QueryEmbeddingCache,
    RedisBackend,
    normalise_query,
    result_key,
)
from service.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_up(port: int = 6379) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def key(query="What is BM25?", versions=None, k=10, **kw) -> str:
    args = dict(namespace="t", query=query, pipeline="bm25", config_hash="h1", versions=versions or {"lucene": "v1"},
                k=k, collection="scifact", lang=None)
    args.update(kw)
    return result_key(**args)


def test_key_normalises_whitespace_and_unicode_but_not_case():
    assert normalise_query("  a\u00a0 b\tc ") == "a b c"
    assert key("What  is BM25? ") == key("What is BM25?") == key("What is\nBM25?")
    assert key("what is bm25?") != key("What is BM25?")


@pytest.mark.parametrize("change", [{"versions": {"lucene": "v2"}}, {"k": 11}, {"collection": "other"}, {"lang": "de"},
                                    {"config_hash": "h2"}, {"pipeline": "dense"}])
def test_key_changes_with_everything_that_changes_an_answer(change):
    assert key(**change) != key()


def test_lru_expires_and_evicts_least_recent():
    lru = LRUBackend(max_entries=2)
    lru.set("a", b"1", ttl_s=0)
    lru.set("b", b"2", ttl_s=0)
    assert lru.get("a") == b"1"  # a is now the most recent
    lru.set("c", b"3", ttl_s=0)
    assert lru.get("b") is None and lru.get("a") == b"1" and len(lru) == 2
    now = [0.0]
    timed = LRUBackend(max_entries=2, timer=lambda: now[0])
    timed.set("t", b"x", ttl_s=1)
    timed.set("forever", b"y", ttl_s=0)
    assert timed.get("t") == b"x"
    now[0] = 1.5  # past t's time to live
    assert timed.get("t") is None and timed.get("forever") == b"y" and len(timed) == 1


def test_cache_counts_hits_and_misses():
    seen = []
    cache = Cache(LRUBackend(10), on_outcome=lambda kind, outcome: seen.append((kind, outcome)))
    assert cache.get_json("results", "k") is None
    cache.set_json("results", "k", {"hits": [["d1", 1.5, {}]]}, ttl_s=10)
    assert cache.get_json("results", "k") == {"hits": [["d1", 1.5, {}]]}
    assert seen == [("results", "miss"), ("results", "hit")]


def test_query_embedding_cache_round_trip():
    emb = QueryEmbeddingCache(Cache(LRUBackend(10)))
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    emb.set_many("minilm@1", ["a", "b"], vectors)
    got = emb.get_many("minilm@1", ["a", "b", "c"])
    assert set(got) == {"a", "b"} and np.array_equal(got["b"], vectors[1])
    assert emb.get_many("other-model", ["a"]) == {}


def test_redis_down_is_bypassed_counted_and_retried():
    errors: list[str] = []
    outcomes: list[str] = []
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.1, retry_s=0.3, on_error=errors.append)
    cache = Cache(backend, on_outcome=lambda kind, outcome: outcomes.append(outcome))
    assert cache.get_json("results", "k") is None
    cache.set_json("results", "k", {"x": 1}, ttl_s=10)  # does not raise
    assert errors == ["get"] and outcomes == ["bypass", "bypass"] and not backend.available
    with pytest.raises(CacheUnavailable, match="retrying in"):
        backend.get("k")  # within retry_s: not even tried
    assert errors == ["get"]
    time.sleep(0.35)
    assert cache.get_json("results", "k") is None
    assert errors == ["get", "get"]  # tried again after retry_s


@pytest.mark.redis
def test_real_redis_round_trip_with_ttl():
    if not redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    backend = RedisBackend("redis://127.0.0.1:6379/0")
    k = f"test-service-cache:{uuid.uuid4().hex}"
    backend.set(k, b"value", ttl_s=30)
    assert backend.get(k) == b"value" and backend.get_many([k, k + "missing"]) == [b"value", None]
    assert 0 < backend.client.ttl(k) <= 30
    backend.client.delete(k)


@pytest.mark.redis
def test_own_redis_stopped_and_restarted_reconnects(tmp_path):
    """A private redis-server (not the shared one): stop it, searches bypass; start it, the cache works again."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]

    def start():
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if redis_up(port):
                return proc
            time.sleep(0.05)
        proc.kill()
        pytest.skip("redis-server did not start")

    proc = start()
    try:
        backend = RedisBackend(f"redis://127.0.0.1:{port}/0", timeout_s=0.2, retry_s=0.2)
        backend.set("k", b"1", ttl_s=60)
        assert backend.get("k") == b"1"
        proc.terminate()
        proc.wait(5)
        with pytest.raises(CacheUnavailable):
            backend.get("k")
        assert not backend.available
        proc = start()
        time.sleep(0.25)
        backend.set("k", b"2", ttl_s=60)  # reconnects on its own
        assert backend.get("k") == b"2" and backend.available
    finally:
        proc.terminate()
        proc.wait(5)


def search(c: TestClient, query: str, **kw):
    r = c.post("/search", json={"query": query, "k": 3, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def test_repeated_search_is_served_from_cache(tiny_engine):
    with TestClient(create_app(Settings(collections=["tiny"]), engine=tiny_engine)) as c:
        first, second = search(c, "ocean tides moon"), search(c, "  ocean tides\tmoon ")
        assert not first["cached"] and second["cached"]
        assert [h["doc_id"] for h in first["hits"]] == [h["doc_id"] for h in second["hits"]]
        assert second["hits"][0]["title"] == "Tides"
        explained = search(c, "ocean tides moon", explain=True)
        assert explained["cached"] and "bm25" in explained["timings_ms"] and "bm25" in explained["hits"][0]["stage_scores"]
        assert not search(c, "ocean tides moon", k=2)["cached"]  # k is part of the key
        metrics = c.get("/metrics").text
        assert 'search_cache_requests_total{cache="results",outcome="hit"} 2.0' in metrics


def test_cache_off_with_zero_ttl(tiny_engine):
    with TestClient(create_app(Settings(collections=["tiny"], cache_ttl_s=0), engine=tiny_engine)) as c:
        search(c, "glaciers ice")
        assert not search(c, "glaciers ice")["cached"]


def test_search_succeeds_with_redis_unreachable(tiny_engine):
    settings = Settings(collections=["tiny"], redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_retry_s=60)
    with TestClient(create_app(settings, engine=tiny_engine)) as c:
        for _ in range(3):
            assert search(c, "volcano lava")["hits"][0]["doc_id"] == "d2"
        metrics = c.get("/metrics").text
        assert 'search_cache_requests_total{cache="results",outcome="bypass"}' in metrics
        assert 'search_cache_errors_total{backend="redis",op="get"} 1.0' in metrics


@pytest.mark.redis
def test_search_through_real_redis(tiny_engine):
    if not redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    settings = Settings(collections=["tiny"], redis_url="redis://127.0.0.1:6379/0", cache_namespace=f"test-{uuid.uuid4().hex[:8]}")
    with TestClient(create_app(settings, engine=tiny_engine)) as c:
        assert not search(c, "bread yeast")["cached"]
        assert search(c, "bread yeast")["cached"]
        app_cache = c.app.state.cache
        keys = app_cache.backend.client.keys(f"{settings.cache_namespace}:res:*")
        assert len(keys) == 1 and 0 < app_cache.backend.client.ttl(keys[0]) <= settings.cache_ttl_s
        app_cache.backend.client.delete(*keys)
