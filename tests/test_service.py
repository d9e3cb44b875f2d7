"""The real app over a real (tiny) Lucene index: searches and every bad input."""

from __future__ import annotations

import pytest


def test_search_returns_hits_with_title_and_text(client):
    r = client.post("/search", json={"query": "volcano lava magma", "k": 3, "pipeline": "bm25"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"][0]["doc_id"] == "d2"
    assert body["hits"][0]["title"] == "Volcanoes" and "magma" in body["hits"][0]["text"]
    assert [h["rank"] for h in body["hits"]] == list(range(1, len(body["hits"]) + 1))
    assert len(body["hits"]) <= 3 and body["collection"] == "tiny"
    assert "stage_scores" not in body["hits"][0]


def test_explain_gives_stage_scores_and_timings(client):
    body = client.post("/search", json={"query": "ocean tides", "explain": True}).json()
    assert "bm25" in body["hits"][0]["stage_scores"] and "bm25" in body["timings_ms"]


def test_health_ready_pipelines_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["collections"] == {"tiny": ["bm25"]}
    assert client.get("/pipelines").json()[0]["loaded"] is True
    assert "/search" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"query": ""}, 422, "must not be empty"),
        ({"query": "   \n\t"}, 422, "must not be empty"),
        ({"query": "x" * 2049}, 422, "limit is 2048"),
        ({"query": "x", "k": 0}, 422, "greater than or equal to 1"),
        ({"query": "x", "k": 1001}, 422, "less than or equal to 1000"),
        ({"query": "x", "k": "10"}, 422, "valid integer"),
        ({"query": 42}, 422, "valid string"),
        ({"query": ["a"]}, 422, "valid string"),
        ({}, 422, "Field required"),
        ({"query": "x", "pipeline": "nope"}, 404, "unknown pipeline 'nope'"),
        ({"query": "x", "collection": "../etc"}, 404, "unknown collection"),
        ({"query": "x", "colour": "red"}, 422, "Extra inputs"),
        ({"query": "x", "explain": "yes"}, 422, "valid boolean"),
    ],
)
def test_bad_input_is_4xx_with_a_message(client, body, status, needle):
    r = client.post("/search", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_malformed_json(client):
    r = client.post("/search", content=b'{"query": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON decode error" in r.text


def test_non_json_body(client):
    r = client.post("/search", content=b"query=x", headers={"content-type": "text/plain"})
    assert 400 <= r.status_code < 500


def test_unicode_and_lucene_syntax_queries_do_not_fail(client):
    for q in ["AND OR NOT", "title:(", "\"unbalanced", "日本語の検索", "a" * 2048, "?*~^", "\\"]:
        r = client.post("/search", json={"query": q})
        assert r.status_code == 200, (q, r.text)
