"""Batch search, /rerank (Cohere/Jina shape), explain, metrics, request ids and JSON logs.

The reranking stages here are :class:`RerankStage` around a small test scorer (query-term overlap),
registered under test-only types, so ``/search`` and ``/rerank`` run the production stage code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import uuid
from typing import Sequence

import pytest
from fastapi.testclient import TestClient

from pipeline.core.config import StageConfig
from pipeline.core.types import Query
from pipeline.registry import parse_config, register_stage
from pipeline.scorers.base import PairScorer
from pipeline.scorers.passages import Passages
from pipeline.stages.rerank import RerankStage
from pipeline.storage.docstore import DocStore
from service.app import create_app
from service.engine import Engine
from service.logging_config import JsonFormatter, RequestIdFilter, request_id_var
from service.rerank_api import calibrated
from service.settings import Settings


def overlap(query: str, text: str) -> float:
    q = set(re.findall(r"\w+", query.lower()))
    return float(len(q & set(re.findall(r"\w+", text.lower()))))


class OverlapConfig(StageConfig):
    type: str = "test_overlap"
    explode: bool = False


class OverlapScorer(PairScorer):
    """Scores each passage by query-term overlap (plus ``bonus``); ``explode`` makes it fail."""

    def __init__(self, explode: bool = False, bonus: float = 0.0):
        self.explode, self.bonus = explode, bonus

    def score_batch(self, queries: Sequence[Query], passages: Sequence[Sequence[str]]) -> list[list[float]]:
        if self.explode:
            raise RuntimeError("reranker exploded")
        return [[overlap(q.text, p) + self.bonus for p in ps] for q, ps in zip(queries, passages, strict=True)]


def _build(name: str, bonus: float = 0.0):
    def build(cfg: OverlapConfig, ctx) -> RerankStage:
        from pipeline.storage.index_store import resolve

        folder, _ = resolve(ctx.index_root, ctx.collection, "lucene")
        return RerankStage(OverlapScorer(cfg.explode, bonus), Passages(DocStore(folder / "docstore.sqlite")), top_n=None,
                           name=name)

    return build


register_stage("test_overlap", OverlapConfig, _build("overlap"))
register_stage("test_text_scorer", OverlapConfig, _build("text_scorer", bonus=0.5))

BM25 = {"type": "bm25", "index": "lucene", "cutoff": 5}
CONFIG = {
    "indexes": {"lucene": {"type": "lucene"}},
    "pipelines": {
        "bm25": {"stages": [{"type": "bm25", "index": "lucene", "cutoff": 100}]},
        "bm25>>overlap": {"stages": [BM25, {"type": "test_overlap"}]},
        "bm25>>scorer": {"stages": [BM25, {"type": "test_text_scorer"}]},
        "bm25>>broken": {"stages": [BM25, {"type": "test_overlap", "name": "broken", "explode": True, "fail_open": True}]},
        "bm25>>strict": {"stages": [BM25, {"type": "test_overlap", "name": "strict", "explode": True}]},
    },
}


@pytest.fixture(scope="module")
def rerank_engine(tiny_index_root):
    return Engine(parse_config(CONFIG), tiny_index_root, tiny_index_root, ["tiny"])


@pytest.fixture
def rc(rerank_engine):
    settings = Settings(collections=["tiny"], rerank_pipelines=["bm25>>overlap", "bm25>>scorer", "bm25>>strict"])
    with TestClient(create_app(settings, engine=rerank_engine)) as c:
        yield c


DOCS = ["Bread rises because yeast ferments sugar.", {"text": "Lava from a volcano.", "title": "Volcanoes"},
        "A volcano erupts lava, ash and magma when magma rises."]


def test_batch_equals_single_searches(client):
    queries = [{"id": "a", "query": "volcano lava magma"}, {"query": "ocean tides moon"}, {"id": "c", "query": "glaciers ice"}]
    r = client.post("/search/batch", json={"queries": queries, "k": 3, "explain": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["id"] for x in results] == ["a", "1", "c"]
    for q, res in zip(queries, results, strict=True):
        single = client.post("/search", json={"query": q["query"], "k": 3}).json()
        assert [h["doc_id"] for h in res["hits"]] == [h["doc_id"] for h in single["hits"]]
        assert "bm25" in res["timings_ms"] and res["hits"][0]["stage_scores"]["bm25"] > 0
    assert results[0]["hits"][0]["doc_id"] == "d2"


def test_batch_limits(tiny_engine):
    with TestClient(create_app(Settings(collections=["tiny"], max_batch=2), engine=tiny_engine)) as c:
        r = c.post("/search/batch", json={"queries": [{"query": "a"}] * 3})
        assert r.status_code == 422 and "over the limit of 2" in r.text
        assert c.post("/search/batch", json={"queries": []}).status_code == 422
        assert c.post("/search/batch", json={"queries": [{"query": " "}]}).status_code == 422
        assert c.post("/search/batch", json={"queries": [{"query": "a"}], "pipeline": "nope"}).status_code == 404


def test_rerank_orders_documents_cohere_style(rc):
    r = rc.post("/rerank", json={"query": "volcano magma lava", "documents": DOCS, "model": "bm25>>overlap"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "bm25>>overlap"
    assert [x["index"] for x in body["results"]] == [2, 1, 0]
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True) and scores[-1] == 0.5  # sigmoid(0)
    assert all(0.0 < x < 1.0 for x in scores)
    assert "document" not in body["results"][0] and "raw_score" not in body["results"][0]
    assert uuid.UUID(body["id"]) and body["meta"]["api_version"] == {"version": "2"}
    assert body["meta"]["billed_units"]["search_units"] == 1
    assert [x["tokens"] for x in body["results"]] == [len(DOCS[2].split()), 5, 6]  # title + text, in words
    assert not any(x["truncated"] for x in body["results"])


def test_rerank_top_n_and_return_documents(rc):
    body = rc.post("/rerank", json={"query": "volcano magma lava", "documents": DOCS, "top_n": 2,
                                    "return_documents": True, "model": "bm25>>scorer"}).json()
    assert [x["index"] for x in body["results"]] == [2, 1]
    assert body["results"][1]["document"] == {"text": "Lava from a volcano.", "title": "Volcanoes"}
    assert body["results"][0]["relevance_score"] == pytest.approx(calibrated(overlap("volcano magma lava", DOCS[2]) + 0.5))


def test_rerank_raw_scores_and_max_tokens_per_doc(rc):
    body = rc.post("/rerank", json={"query": "magma", "documents": DOCS, "model": "bm25>>scorer", "raw_scores": True,
                                    "max_tokens_per_doc": 3}).json()
    by_index = {x["index"]: x for x in body["results"]}
    assert by_index[2]["raw_score"] == 0.5  # "A volcano erupts": the two "magma"s come later and are not read
    assert by_index[2]["truncated"] and by_index[2]["tokens"] == len(DOCS[2].split())
    assert by_index[1]["truncated"] is True  # "Volcanoes Lava from a volcano." is 5 words
    assert any("3 of 3 documents were truncated to their first 3 words" in w for w in body["meta"]["warnings"])
    full = rc.post("/rerank", json={"query": "magma", "documents": DOCS, "model": "bm25>>scorer", "raw_scores": True}).json()
    assert {x["index"]: x["raw_score"] for x in full["results"]}[2] == 1.5


def test_rerank_truncate_false_refuses_long_documents(rc):
    r = rc.post("/rerank", json={"query": "magma", "documents": DOCS, "max_tokens_per_doc": 3, "truncate": False})
    assert r.status_code == 422 and "indices [0, 1, 2]" in r.json()["detail"] and "truncate: true" in r.json()["detail"]


def test_rerank_default_model_and_errors(rc, client):
    assert rc.post("/rerank", json={"query": "lava", "documents": ["lava"]}).json()["model"] == "bm25>>overlap"
    r = rc.post("/rerank", json={"query": "lava", "documents": ["x"], "model": "nope"})
    assert r.status_code == 404 and "unknown reranker 'nope'" in r.text
    r = rc.post("/rerank", json={"query": "lava", "documents": ["x"], "model": "bm25>>strict"})
    assert r.status_code == 503 and "reranker exploded" in r.text
    r = client.post("/rerank", json={"query": "lava", "documents": ["x"]})  # bm25 only: no reranker loaded
    assert r.status_code == 503 and "no reranker is loaded" in r.text
    for bad in [{"query": "lava", "documents": []}, {"query": "", "documents": ["a"]}, {"query": "a", "documents": [1]},
                {"query": "a", "documents": ["a"], "top_n": 0}, {"query": "a", "documents": [{"txt": "a"}]}]:
        assert rc.post("/rerank", json=bad).status_code == 422, bad


def test_reranking_pipeline_explains_both_stages(rc):
    body = rc.post("/search", json={"query": "volcano magma lava", "pipeline": "bm25>>overlap", "k": 3, "explain": True}).json()
    top = body["hits"][0]
    assert top["doc_id"] == "d2" and set(top["stage_scores"]) == {"bm25", "overlap"}
    assert set(body["timings_ms"]) == {"bm25", "overlap", "overlap.docs"} and body["degraded"] == []


def test_failing_reranker_fails_open_and_is_not_cached(rc):
    for _ in range(2):
        r = rc.post("/search", json={"query": "volcano magma", "pipeline": "bm25>>broken", "k": 3})
        assert r.status_code == 200 and r.json()["degraded"] == ["broken"] and r.json()["cached"] is False
        assert r.json()["hits"][0]["doc_id"] == "d2"  # the BM25 order was kept
    assert rc.post("/search", json={"query": "volcano", "pipeline": "bm25>>strict"}).status_code == 503
    assert 'search_degraded_total{pipeline="bm25>>broken",stage="broken"} 2.0' in rc.get("/metrics").text


def test_metrics_cover_latency_stages_cache_batches_and_errors(rc):
    rc.post("/search", json={"query": "volcano magma", "pipeline": "bm25>>overlap", "k": 3})
    rc.post("/search", json={"query": "volcano magma", "pipeline": "nope"})
    rc.post("/rerank", json={"query": "lava", "documents": ["a", "b", "c"]})
    text = rc.get("/metrics").text
    assert 'search_request_seconds_count{endpoint="search",pipeline="bm25>>overlap"}' in text
    assert 'search_stage_seconds_count{pipeline="bm25>>overlap",stage="overlap"}' in text
    assert re.search(r'search_rerank_batch_size_sum\{pipeline="bm25>>overlap",stage="overlap"\} [1-5]\.0', text)
    assert 'search_rerank_batch_size_sum{pipeline="bm25>>overlap",stage="rerank_endpoint"} 3.0' in text
    assert 'search_errors_total{kind="not_found"} 1.0' in text  # the HTTP kinds, like "validation" and "rate_limited"
    assert 'search_cache_requests_total{cache="results",outcome="miss"}' in text
    assert 'search_index_version_info{collection="tiny",index="lucene"' in text
    assert 'search_http_requests_total{method="POST",route="/search",status="404"} 1.0' in text


def test_request_id_is_echoed_or_created(client):
    assert client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/healthz", headers={"x-request-id": "bad id\nwith newline"}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert client.post("/search", json={"query": ""}).headers["x-request-id"]


def test_json_log_lines_carry_the_request_id():
    record = logging.makeLogRecord({"name": "service.x", "levelname": "INFO", "msg": "hello %s", "args": ("you",),
                                    "status": 200})
    token = request_id_var.set("rid-1")
    try:
        RequestIdFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello you" and line["request_id"] == "rid-1" and line["status"] == 200
    assert line["level"] == "INFO" and line["ts"].endswith("Z")


def test_access_log_has_request_fields(client, caplog):
    caplog.set_level(logging.INFO, logger="service.access")
    client.post("/search", json={"query": "tides"}, headers={"x-request-id": "rid-log"})
    rec = [r for r in caplog.records if r.name == "service.access" and getattr(r, "path", "") == "/search"][-1]
    assert rec.status == 200 and rec.duration_ms > 0 and rec.method == "POST"
    assert rec.request_id == "rid-log"


def test_unexpected_error_is_500_json_with_request_id(tiny_engine):
    app = create_app(Settings(collections=["tiny"]), engine=tiny_engine)

    @app.get("/boom")
    async def boom():
        raise KeyError("boom")

    with TestClient(app) as c:
        r = c.get("/boom", headers={"x-request-id": "rid-500"})
        assert r.status_code == 500 and r.headers["x-request-id"] == "rid-500" and "X-Request-ID" in r.json()["detail"]
        assert 'search_errors_total{kind="internal"} 1.0' in c.get("/metrics").text


def test_indexes_lists_served_versions(client, tiny_index):
    assert client.get("/indexes").json() == {"tiny": {"lucene": tiny_index.name}}


def test_worker_threads_detach_from_the_jvm_on_exit():
    """Search threads call into the JVM; each must detach as it ends (else the JVM may crash later)."""
    import sys
    import types

    from service.threads import Workers

    detached: list[int] = []
    fake = types.SimpleNamespace(detach=lambda: detached.append(threading.get_ident()))
    real = sys.modules.get("jnius")
    sys.modules["jnius"] = fake  # type: ignore[assignment]
    try:
        workers = Workers(2)

        async def go():
            return await workers.run(threading.get_ident)

        ident = asyncio.run(go())
        workers.shutdown()
    finally:
        if real is not None:
            sys.modules["jnius"] = real
        else:
            del sys.modules["jnius"]
    assert ident in detached


def test_every_thread_detaches_once_the_service_started(client):
    """The service installs a process-wide hook: threads started by any stage detach from the JVM as they end."""
    import sys
    import types

    detached: list[int] = []
    real = sys.modules.get("jnius")
    sys.modules["jnius"] = types.SimpleNamespace(detach=lambda: detached.append(threading.get_ident()))  # type: ignore[assignment]
    try:
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(threading.get_ident()))
        t.start()
        t.join()
    finally:
        if real is not None:
            sys.modules["jnius"] = real
        else:
            del sys.modules["jnius"]
    assert seen and seen[0] in detached
