"""Issue 21, findings 3, 5 and 7-12: cache isolation, /rerank admission, forwarded headers, leaks in
production, lone surrogates, weak keys and settings, traffic that escaped the limiter, a clear key
echoed on stderr. Each test reproduces what the adversarial test did."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings, hash_key
from tests.conftest import REPO
from tests.test_service_endpoints import CONFIG, DOCS  # noqa: F401 - registers the test rerankers

KEY, ADMIN = "k-live-0123456789abcdef", "adm-0123456789abcdef0123"
SECURE = dict(env="production", collections=["tiny"], api_key_hashes=[hash_key(KEY)], admin_key_hashes=[hash_key(ADMIN)],
              cors_origins=["https://app.example"], rate_limit_per_minute=600)


@pytest.fixture(scope="module")
def rerank_engine(tiny_index_root):
    from pipeline.registry import parse_config
    from service.engine import Engine

    return Engine(parse_config(CONFIG), tiny_index_root, tiny_index_root, ["tiny"])


def _raw(client: TestClient, path: str, body: dict, **headers):
    """POST ``body`` as JSON with ``\\ud800`` escapes kept (httpx would refuse to encode a lone surrogate)."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json", **headers})


# ------------------------------------------------------------------ finding 3: cache poisoning
def test_full_width_query_does_not_poison_the_plain_querys_cache_entry(client):
    from pipeline.core.types import Query

    wide = client.post("/search", json={"query": "ｖｏｌｃａｎｏ ｌａｖａ"}).json()
    plain = client.post("/search", json={"query": "volcano lava"}).json()
    assert plain["hits"] and plain["hits"][0]["doc_id"] == "d2"  # not the full-width query's cached 0 hits
    engine = client.app.state.engine
    for body, text in [(wide, "ｖｏｌｃａｎｏ ｌａｖａ"), (plain, "volcano lava")]:  # each = the uncached pipeline's answer
        direct = engine.search([Query("q", text)], "bm25", "tiny").results["q"][:10]
        assert [h["doc_id"] for h in body["hits"]] == [h.doc_id for h in direct]


def test_cache_key_is_the_exact_text_the_pipeline_sees():
    from service.cache import result_key

    args = ("ns", "bm25", "cfg", {"lucene": "v1"}, 10, "tiny", None)
    assert result_key(args[0], "ﬁre", *args[1:]) != result_key(args[0], "fire", *args[1:])
    assert result_key(args[0], "ＢＭ２５", *args[1:]) != result_key(args[0], "BM25", *args[1:])


# ------------------------------------------------------------------ finding 5: /rerank admission
def test_rerank_over_the_documented_cost_is_refused(rerank_engine):
    settings = Settings(collections=["tiny"], rerank_max_request_cost=200)
    with TestClient(create_app(settings, engine=rerank_engine)) as c:
        r = c.post("/rerank", json={"query": "volcano lava", "documents": ["lava " * 40] * 20})
        assert r.status_code == 413 and "rerank_max_request_cost" in r.json()["detail"]
        assert c.post("/rerank", json={"query": "volcano lava", "documents": DOCS}).status_code == 200


def test_rerank_client_share_and_total_budget(rerank_engine):
    settings = Settings(collections=["tiny"], rerank_max_inflight_cost=1000, rerank_client_share=0.5)
    with TestClient(create_app(settings, engine=rerank_engine)) as c:
        admission = c.app.state.admission
        with admission.admit("addr:testclient", 400):  # this client already holds most of its share
            r = c.post("/rerank", json={"query": "volcano lava", "documents": DOCS * 10})
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            with admission.admit("addr:other", 500):  # and the reranker is nearly full
                r = c.post("/rerank", json={"query": "lava", "documents": DOCS * 10})
                assert r.status_code in (429, 503)
        assert c.post("/rerank", json={"query": "volcano lava", "documents": DOCS * 10}).status_code == 200
        assert admission.in_flight == 0


# ------------------------------------------------------------------ finding 7: X-Forwarded-For
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_forwarded_for_is_ignored_unless_from_a_configured_proxy(tiny_engine):
    from service.__main__ import server_options

    settings = Settings(collections=["tiny"], rate_limit_per_minute=6, rate_limit_burst=1)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine=tiny_engine), host="127.0.0.1", port=port,
                                           log_config=None, **server_options(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        codes = [httpx.post(f"http://127.0.0.1:{port}/search", json={"query": "lava"},
                            headers={"x-forwarded-for": f"10.0.0.{i}"}).status_code for i in range(3)]
        assert codes == [200, 429, 429]  # one address, whatever it claims
    finally:
        server.should_exit = True
        thread.join(10)
    assert server_options(Settings(trusted_proxies=["10.1.2.3"]))["forwarded_allow_ips"] == "10.1.2.3"


# ------------------------------------------------------------------ finding 8: leaks in production
@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/pipelines", "/indexes"])
def test_production_descriptions_need_a_key(tiny_engine, path):
    with TestClient(create_app(Settings(**SECURE), engine=tiny_engine)) as c:
        assert c.get(path).status_code == 401
        assert c.get(path, headers={"x-api-key": KEY}).status_code == 200


def test_production_errors_carry_no_paths_or_java_text(rerank_engine, tiny_index_root):
    from pipeline.core.errors import StageError

    settings = Settings(**{**SECURE, "index_root": tiny_index_root})
    with TestClient(create_app(settings, engine=rerank_engine)) as c:
        stage = rerank_engine.pipeline("bm25>>strict", "tiny").stages[-1].inner
        message = (f"JVM exception occurred: java.io.IOException: {tiny_index_root}/tiny/lucene/versions/x/_0.cfs\n"
                   "\torg.apache.lucene.store.NIOFSDirectory.openInput(NIOFSDirectory.java:1)")
        stage.transform = lambda *a, **k: (_ for _ in ()).throw(StageError(message))
        try:
            r = c.post("/search", json={"query": "lava", "pipeline": "bm25>>strict"}, headers={"x-api-key": KEY})
        finally:
            del stage.transform
        assert r.status_code == 503
        assert str(tiny_index_root) not in r.text and "java" not in r.text.lower() and "org.apache" not in r.text


# ------------------------------------------------------------------ finding 9: lone surrogates
@pytest.mark.parametrize("path,body", [
    ("/search", {"query": "lava \ud800"}),
    ("/search/batch", {"queries": [{"query": "\udfff lava"}]}),
    ("/rerank", {"query": "lava \ud800", "documents": ["x"]}),
    ("/rerank", {"query": "lava", "documents": ["x", "bad \ud800"]}),
    ("/rerank", {"query": "lava", "documents": [{"text": "ok", "title": "\ud83d"}]}),
])
def test_lone_surrogates_are_422(rerank_engine, path, body):
    with TestClient(create_app(Settings(collections=["tiny"]), engine=rerank_engine)) as c:
        r = _raw(c, path, {**body, **({"model": "bm25>>overlap"} if path == "/rerank" else {})})
        assert r.status_code == 422 and "surrogate" in r.text


# ------------------------------------------------------------------ finding 10: weak keys and settings
@pytest.mark.parametrize("weak", ["CHANGEME", "password123", "x", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"])
def test_production_refuses_a_weak_key_when_it_is_presented(tiny_engine, weak):
    with TestClient(create_app(Settings(**{**SECURE, "api_key_hashes": [hash_key(weak)]}), engine=tiny_engine)) as c:
        r = c.post("/search", json={"query": "lava"}, headers={"x-api-key": weak})
        assert r.status_code == 403 and "too weak" in r.json()["detail"]


def test_hash_key_refuses_a_weak_key_and_new_key_makes_a_strong_one():
    run = [sys.executable, "-m", "service"]
    weak = subprocess.run([*run, "--hash-key", "password123"], capture_output=True, text=True, cwd=REPO)
    assert weak.returncode == 2 and "too weak" in weak.stderr
    made = subprocess.run([*run, "--new-key"], capture_output=True, text=True, cwd=REPO)
    key, digest = made.stdout.split()
    assert made.returncode == 0 and hash_key(key) == digest and len(key) >= 32


@pytest.mark.parametrize("change,needle", [
    ({"cors_origins": ["null"]}, "null"),
    ({"cors_origins": ["app.example"]}, "origin"),
    ({"rate_limit_per_minute": 1_000_000_000}, "RATE_LIMIT"),
    ({"rate_limit_burst": 10_000_000}, "BURST"),
])
def test_production_refuses_absurd_settings(change, needle):
    with pytest.raises(ValidationError, match=needle):
        Settings(**{**SECURE, **change})


# ------------------------------------------------------------------ finding 11: escaping the limiter
def test_wrong_key_requests_are_rate_limited(tiny_engine):
    settings = Settings(collections=["tiny"], api_key_hashes=[hash_key(KEY)], rate_limit_per_minute=6, rate_limit_burst=2)
    with TestClient(create_app(settings, engine=tiny_engine)) as c:
        codes = [c.post("/search", json={"query": "lava"}, headers={"x-api-key": "guess-%d" % i}).status_code for i in range(4)]
        assert codes[:2] == [403, 403] and codes[2:] == [429, 429]


def test_a_batch_costs_queries_times_k(tiny_engine):
    settings = Settings(collections=["tiny"], rate_limit_per_minute=60, rate_limit_burst=20)
    with TestClient(create_app(settings, engine=tiny_engine)) as c:
        body = {"queries": [{"query": "lava"}] * 8, "k": 1000}
        assert c.post("/search/batch", json=body).status_code == 200
        r = c.post("/search/batch", json=body)
        assert r.status_code == 429 and "cost" in r.json()["detail"]


def test_the_limit_is_shared_by_workers_through_redis():
    from service.rate_limit import build_limiter

    settings = Settings(redis_url="redis://127.0.0.1:6379/14", rate_limit_per_minute=6, rate_limit_burst=3,
                        cache_namespace=f"t21-{uuid.uuid4().hex[:8]}")
    try:
        first, second = build_limiter(settings), build_limiter(settings)  # two worker processes
        first.client.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no redis: {exc}")
    allowed = [(first if i % 2 else second).take("key:abc")[0] for i in range(6)]
    assert allowed == [True, True, True, False, False, False]


# ------------------------------------------------------------------ finding 12: a clear key on stderr
def test_a_clear_key_in_the_digest_list_is_never_printed():
    secret = "my-clear-secret-key-0123456789"
    env = {**os.environ, "SEARCH_API_KEY_HASHES": json.dumps([secret])}
    out = subprocess.run([sys.executable, "-m", "service"], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert out.returncode == 2 and "64 hex" in out.stderr
    assert secret[:6] not in out.stderr + out.stdout
