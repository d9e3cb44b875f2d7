"""Access control: API keys (401/403), admin key, rate limits (429 + Retry-After), body limit (413),
CORS, path-like names, and the production profile refusing insecure defaults."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from pipeline.core.errors import ConfigError
from pipeline.registry import parse_config
from service.app import create_app
from service.rate_limit import RateLimiter
from service.settings import Settings, hash_key

KEY, OTHER, ADMIN = "k-live-0123456789abcdef", "k-live-fedcba9876543210", "adm-0123456789abcdef0123"


def make_client(engine, **overrides) -> TestClient:
    settings = Settings(collections=["tiny"], **overrides)
    return TestClient(create_app(settings, engine=engine))


@pytest.fixture
def keyed(tiny_engine):
    with make_client(tiny_engine, api_key_hashes=[hash_key(KEY), hash_key(OTHER)], admin_key_hashes=[hash_key(ADMIN)]) as c:
        yield c


def test_missing_key_is_401_with_challenge(keyed):
    r = keyed.post("/search", json={"query": "volcano"})
    assert r.status_code == 401 and "missing API key" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{"authorization": "Bearer nope"}, {"x-api-key": "nope"}, {"x-api-key": KEY + "x"}])
def test_wrong_key_is_403(keyed, headers):
    r = keyed.post("/search", json={"query": "volcano"}, headers=headers)
    assert r.status_code == 403 and r.json()["detail"] == "invalid API key"


@pytest.mark.parametrize("headers", [{"authorization": f"Bearer {KEY}"}, {"x-api-key": OTHER}])
def test_right_key_passes(keyed, headers):
    for path, body in [("/search", {"query": "volcano"}), ("/search/batch", {"queries": [{"query": "volcano"}]})]:
        r = keyed.post(path, json=body, headers=headers)
        assert r.status_code == 200, r.text


def test_health_and_metrics_need_no_key(keyed):
    assert keyed.get("/healthz").status_code == 200 and keyed.get("/readyz").status_code == 200
    assert keyed.get("/metrics").status_code == 200


def test_admin_reload_needs_the_admin_key(keyed):
    assert keyed.post("/admin/reload").status_code == 401
    assert keyed.post("/admin/reload", headers={"x-admin-key": "wrong"}).status_code == 403
    assert keyed.post("/admin/reload", headers={"x-admin-key": KEY}).status_code == 403  # an API key is not an admin key
    r = keyed.post("/admin/reload", headers={"x-admin-key": ADMIN})
    assert r.status_code == 200 and r.json()["refused"] == {}


def test_rate_limit_429_with_retry_after(tiny_engine):
    with make_client(tiny_engine, api_key_hashes=[hash_key(KEY), hash_key(OTHER)], rate_limit_per_minute=6, rate_limit_burst=2) as c:
        codes = [c.post("/search", json={"query": "tides"}, headers={"x-api-key": KEY}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = c.post("/search", json={"query": "tides"}, headers={"x-api-key": KEY})
        assert r.status_code == 429 and "rate limit" in r.json()["detail"]
        assert 1 <= int(r.headers["retry-after"]) <= 10
        # limits are per key: another key still passes
        assert c.post("/search", json={"query": "tides"}, headers={"x-api-key": OTHER}).status_code == 200
        assert 'search_errors_total{kind="rate_limited"} 2.0' in c.get("/metrics").text


def test_rate_limiter_refills_with_time():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert [limiter.take("a")[0] for _ in range(3)] == [True, True, False]
    assert limiter.take("a") == (False, 1)
    now[0] += 1.0  # one token per second
    assert limiter.take("a") == (True, 0)
    assert limiter.take("a")[0] is False
    assert RateLimiter(per_minute=0, burst=0).take("x") == (True, 0)


def test_rate_limiter_memory_is_bounded():
    limiter = RateLimiter(per_minute=60, burst=5, max_clients=100, clock=lambda: 0.0)
    for i in range(1000):
        limiter.take(f"client-{i}")
    assert len(limiter._buckets) <= 100


def test_oversized_body_is_413(tiny_engine):
    with make_client(tiny_engine, max_body_bytes=2048) as c:
        r = c.post("/search", json={"query": "x" * 3000})
        assert r.status_code == 413 and "over the limit of 2048 bytes" in r.json()["detail"]
        assert r.headers.get("x-request-id")
        # a chunked body (no Content-Length) is cut off while it streams
        chunks = (b'{"query": "' + b"y" * 1000 for _ in range(4))
        r = c.post("/search", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/search", json={"query": "volcano"}).status_code == 200
        assert 'search_errors_total{kind="body_too_large"} 2.0' in c.get("/metrics").text


def test_cors_allows_only_configured_origins(tiny_engine):
    with make_client(tiny_engine, cors_origins=["https://app.example"]) as c:
        ok = c.options("/search", headers={"origin": "https://app.example", "access-control-request-method": "POST"})
        assert ok.headers.get("access-control-allow-origin") == "https://app.example"
        bad = c.options("/search", headers={"origin": "https://evil.example", "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in bad.headers


@pytest.mark.parametrize("name", ["../etc", "a/b", "/abs", "..", "x" * 101, ""])
def test_path_like_collection_names_rejected(client, name):
    for path, body in [("/search", {"query": "x", "collection": name}),
                       ("/search/batch", {"queries": [{"query": "x"}], "collection": name}),
                       ("/rerank", {"query": "x", "documents": ["a"], "collection": name})]:
        r = client.post(path, json=body)
        assert r.status_code in (404, 422), (path, r.status_code, r.text)


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "/etc/passwd"])
def test_path_like_index_names_rejected(name):
    raw = {"indexes": {name: {"type": "lucene"}}, "pipelines": {"p": {"stages": [{"type": "bm25", "index": name}]}}}
    with pytest.raises(ConfigError, match="invalid"):
        parse_config(raw)


def test_engine_refuses_path_like_collection(tiny_index_root):
    from service.engine import Engine

    with pytest.raises(ValueError, match="no paths"):
        Engine(parse_config({"pipelines": {"p": {"stages": [{"type": "bm25"}]}}, "indexes": {"lucene": {}}}),
               tiny_index_root, tiny_index_root, ["../tiny"])


SECURE = dict(env="production", api_key_hashes=[hash_key(KEY)], admin_key_hashes=[hash_key(ADMIN)],
              cors_origins=["https://app.example"], rate_limit_per_minute=600)


def test_production_accepts_secure_settings():
    assert Settings(**SECURE).env == "production"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"api_key_hashes": []}, "API_KEY_HASHES is empty"),
        ({"admin_key_hashes": []}, "ADMIN_KEY_HASHES is empty"),
        ({"admin_key_hashes": [hash_key("changeme")]}, "well-known default"),
        ({"cors_origins": ["*"]}, "every origin"),
        ({"rate_limit_per_minute": 0}, "no limit"),
        ({"admin_key_hashes": [hash_key(KEY)]}, "also an admin key"),
    ],
)
def test_production_refuses_insecure_defaults(change, needle):
    with pytest.raises(ValidationError, match=needle):
        Settings(**{**SECURE, **change})


def test_production_refuses_from_the_environment(monkeypatch):
    monkeypatch.setenv("SEARCH_ENV", "production")
    with pytest.raises(ValidationError, match="refusing to start in production"):
        Settings()


def test_development_default_is_open_and_keys_must_be_digests():
    assert Settings().api_key_hashes == [] and Settings().env == "development"
    with pytest.raises(ValidationError, match="64 hex"):
        Settings(api_key_hashes=["plain-text-key"])


def test_keep_alive_outlasts_common_client_pool_expiry(monkeypatch):
    """uvicorn's 5 s default equals httpx's pool expiry: a reused connection could be closed under the
    client (a ReadError seen once in 21,683 load-test requests). The service keeps connections 75 s."""
    assert Settings().keep_alive_s == 75.0
    monkeypatch.setenv("SEARCH_KEEP_ALIVE_S", "30")
    assert Settings().keep_alive_s == 30.0
    with pytest.raises(ValidationError):
        Settings(keep_alive_s=0)
