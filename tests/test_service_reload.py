"""Hot index swap: a new published version is swapped in atomically; a corrupt or incomplete one is
refused while the old one keeps serving; the watcher reloads when ``current`` moves."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.registry import parse_config
from pipeline.storage.index_store import publishing
from service.app import create_app
from service.engine import Engine
from service.settings import Settings, hash_key
from tests.conftest import TINY_CONFIG

ADMIN = "admin-key-for-reload-tests-0001"


@pytest.fixture
def root(tiny_index_root, tmp_path) -> Path:
    """A private copy of the tiny index root (symlinks kept) that tests may republish and break."""
    dst = tmp_path / "indexes"
    shutil.copytree(tiny_index_root, dst, symlinks=True)
    return dst


def republish(root: Path, corrupt: bool = False) -> str:
    """Publish a copy of the first (good) version as a new version; ``corrupt`` truncates a file afterwards."""
    base = root / "tiny" / "lucene"
    source = min((base / "versions").iterdir())
    with publishing(root, "tiny", "lucene") as tmp:
        for item in source.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
    new = (base / "current").resolve()
    if corrupt:
        victim = max((p for p in (new / "lucene").iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
        with open(victim, "r+b") as f:
            f.truncate(victim.stat().st_size // 2)
    return new.name


def point_current_at_incomplete(root: Path) -> str:
    """A version folder without its manifest (a build that never finished), made current by hand."""
    base = root / "tiny" / "lucene"
    source = min((base / "versions").iterdir())
    version = "20990101T000000-incomplete"
    shutil.copytree(source, base / "versions" / version)
    (base / "versions" / version / "manifest.json").unlink()
    os.symlink(Path("versions") / version, base / ".tmp-link")
    os.replace(base / ".tmp-link", base / "current")
    return version


def engine_over(root: Path) -> Engine:
    return Engine(parse_config(TINY_CONFIG), root, root, ["tiny"])


def served(engine: Engine) -> str:
    return engine.served_versions()["tiny"]["lucene"]


def test_reload_swaps_to_the_new_version(root):
    engine = engine_over(root)
    old_version, old_pipe = served(engine), engine.pipeline("bm25", "tiny")
    new_version = republish(root)
    report = engine.reload()
    assert report.swapped == ["tiny/bm25"] and report.refused == {}
    assert served(engine) == new_version != old_version
    assert engine.pipeline("bm25", "tiny") is not old_pipe
    assert engine.collection("tiny").docstore.path.parent.name == new_version
    assert engine.search([_q()], "bm25", "tiny").results["q"][0].doc_id == "d2"
    assert engine.reload().unchanged == ["tiny/bm25"]  # nothing new: nothing rebuilt


@pytest.mark.parametrize("breakage", ["truncated", "incomplete"])
def test_corrupt_or_incomplete_version_is_refused_and_old_keeps_serving(root, breakage):
    engine = engine_over(root)
    old_version, old_pipe = served(engine), engine.pipeline("bm25", "tiny")
    if breakage == "truncated":
        republish(root, corrupt=True)
    else:
        point_current_at_incomplete(root)
    report = engine.reload()
    assert report.swapped == [] and "tiny/bm25" in report.refused
    assert ("corrupt" if breakage == "truncated" else "did not finish") in report.refused["tiny/bm25"]
    assert served(engine) == old_version and engine.pipeline("bm25", "tiny") is old_pipe
    assert engine.search([_q()], "bm25", "tiny").results["q"][0].doc_id == "d2"
    good = republish(root)  # a later good version is taken
    assert engine.reload().swapped == ["tiny/bm25"] and served(engine) == good


def test_admin_endpoint_reports_and_search_keeps_working(root):
    settings = Settings(collections=["tiny"], admin_key_hashes=[hash_key(ADMIN)], index_root=root)
    with TestClient(create_app(settings, engine=engine_over(root))) as c:
        before = c.get("/indexes").json()["tiny"]["lucene"]
        republish(root, corrupt=True)
        r = c.post("/admin/reload", headers={"x-admin-key": ADMIN})
        assert r.status_code == 200 and "tiny/bm25" in r.json()["refused"]
        assert r.json()["versions"]["tiny"]["lucene"] == before
        assert c.post("/search", json={"query": "volcano"}).status_code == 200
        new = republish(root)
        r = c.post("/admin/reload", headers={"x-admin-key": ADMIN})
        assert r.json()["swapped"] == ["tiny/bm25"] and r.json()["versions"]["tiny"]["lucene"] == new
        metrics = c.get("/metrics").text
        assert 'search_index_reloads_total{outcome="refused"} 1.0' in metrics
        assert f'search_index_version_info{{collection="tiny",index="lucene",version="{new}"}} 1.0' in metrics
        assert before not in metrics.split("search_index_version_info")[-1]


def test_new_version_invalidates_cached_results(root):
    with TestClient(create_app(Settings(collections=["tiny"]), engine=engine_over(root))) as c:
        body = {"query": "glaciers snow ice"}
        c.post("/search", json=body)
        assert c.post("/search", json=body).json()["cached"]
        republish(root)
        c.post("/admin/reload")  # development without admin keys: open
        assert not c.post("/search", json=body).json()["cached"]


def test_watcher_reloads_when_current_moves(root):
    settings = Settings(collections=["tiny"], reload_poll_s=0.1)
    with TestClient(create_app(settings, engine=engine_over(root))) as c:
        republish(root, corrupt=True)  # refused once, not retried in a loop
        time.sleep(1.0)
        reloads = c.get("/metrics").text
        assert 'search_index_reloads_total{outcome="refused"} 1.0' in reloads
        new = republish(root)
        deadline = time.monotonic() + 15
        while c.get("/indexes").json()["tiny"]["lucene"] != new:
            assert time.monotonic() < deadline, "the watcher did not swap in the new version"
            time.sleep(0.1)


@pytest.mark.slow  # JVM stress: threads that end after calling Lucene crashed the JVM once in CI-like runs
def test_searches_during_reloads_never_fail(root):
    engine = engine_over(root)
    failures: list[BaseException] = []
    stop = threading.Event()

    def hammer():  # the hook installed by start_jvm detaches this thread from the JVM when it ends
        while not stop.is_set():
            try:
                hits = engine.search([_q()], "bm25", "tiny").results["q"]
                assert hits[0].doc_id == "d2"
                engine.documents([h.doc_id for h in hits], "tiny")
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                failures.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for corrupt in (False, True, False):
            republish(root, corrupt=corrupt)
            engine.reload()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []


def _q():
    from pipeline.core.types import Query

    return Query("q", "volcano lava magma")


def test_off_pipeline_comes_on_when_its_index_is_published(root):
    config = {**TINY_CONFIG, "indexes": {**TINY_CONFIG["indexes"], "other": {"type": "lucene"}},
              "pipelines": {**TINY_CONFIG["pipelines"], "other": {"stages": [{"type": "bm25", "index": "other"}]}}}
    engine = Engine(parse_config(config), root, root, ["tiny"])
    assert "other" in engine.collection("tiny").off
    assert engine.reload().refused == {}  # still off for the same reason: not reported again
    base = root / "tiny" / "other"
    shutil.copytree(root / "tiny" / "lucene", base, symlinks=True)
    report = engine.reload()
    assert report.swapped == ["tiny/other"] and "other" in engine.collection("tiny").pipelines
    assert engine.search([_q()], "other", "tiny").results["q"][0].doc_id == "d2"
