"""Issue 21, findings 1, 2, 4 and 6: content verification, retention, manifest schema, self-healing.

Each test damages a real published Lucene index the way the adversarial test did (same-size
overwrites, wrong manifest types, publishes that prune) and asserts what the service does.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.core.errors import IndexCorruptError
from pipeline.storage.index_integrity import lucene_footer_ok
from pipeline.storage.index_store import Manifest, publishing, resolve
from service.app import create_app
from service.settings import Settings, hash_key
from tests.test_service_reload import _q, engine_over, republish, served

ADMIN = "admin-key-for-integrity-tests-01"


@pytest.fixture
def root(tiny_index_root, tmp_path) -> Path:
    dst = tmp_path / "indexes"
    shutil.copytree(tiny_index_root, dst, symlinks=True)
    return dst


def overwrite_same_size(folder: Path) -> Path:
    """Overwrite bytes in the middle of the largest Lucene file of ``folder``; the size stays the same."""
    victim = max((p for p in (folder / "lucene").iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    size = victim.stat().st_size
    with open(victim, "r+b") as f:
        f.seek(size // 3)
        chunk = f.read(min(64 * 1024, size // 3))
        f.seek(size // 3)
        f.write(bytes(b ^ 0x5A for b in chunk))
    assert victim.stat().st_size == size
    return victim


def test_same_size_corruption_of_a_new_version_is_refused(root):
    engine = engine_over(root)
    old = served(engine)
    new = republish(root)
    overwrite_same_size(root / "tiny" / "lucene" / "versions" / new)
    report = engine.reload()
    assert report.swapped == [] and "checksum" in report.refused["tiny/bm25"]
    assert served(engine) == old
    assert engine.search([_q()], "bm25", "tiny").results["q"][0].doc_id == "d2"


def test_publish_refuses_a_build_whose_lucene_footer_is_wrong(root):
    source = (root / "tiny" / "lucene" / "current").resolve()
    before = os.readlink(root / "tiny" / "lucene" / "current")
    with pytest.raises(IndexCorruptError, match="checksum"):
        with publishing(root, "tiny", "lucene") as tmp:
            for item in source.iterdir():
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
            overwrite_same_size(tmp)
    assert os.readlink(root / "tiny" / "lucene" / "current") == before


def test_manifest_has_a_sha256_per_file_and_resolve_checks_content(tmp_path):
    with publishing(tmp_path, "c", "i") as tmp:
        (tmp / "docs.sqlite").write_bytes(b"0123456789")
        (tmp / "manifest.json").write_text(Manifest(kind="t", collection="c", doc_count=1, source_checksum="x").to_json())
    folder, manifest = resolve(tmp_path, "c", "i", content=True)
    assert len(manifest.sha256["docs.sqlite"]) == 64
    (folder / "docs.sqlite").write_bytes(b"0123456780")  # same size
    resolve(tmp_path, "c", "i")  # the cheap check cannot see it
    with pytest.raises(IndexCorruptError, match="sha256"):
        resolve(tmp_path, "c", "i", content=True)


def test_our_footer_check_agrees_with_lucene(tiny_index):
    from pipeline.runtime.java import start_jvm

    start_jvm()
    from jnius import autoclass

    paths, codec = autoclass("java.nio.file.Paths"), autoclass("org.apache.lucene.codecs.CodecUtil")
    directory = autoclass("org.apache.lucene.store.FSDirectory").open(paths.get(str(tiny_index / "lucene")))
    io_context = autoclass("org.apache.lucene.store.IOContext").READONCE
    for f in (tiny_index / "lucene").iterdir():
        if f.name == "write.lock":
            continue
        stream = directory.openInput(f.name, io_context)
        try:
            codec.checksumEntireFile(stream)  # raises on a mismatch
        finally:
            stream.close()
        assert lucene_footer_ok(f)


# ------------------------------------------------------------------ finding 2: retention
def test_retention_keeps_the_served_version_after_two_bad_publishes(root):
    engine = engine_over(root)
    good = served(engine)
    engine.refresh_leases()
    for _ in range(3):
        overwrite_same_size(root / "tiny" / "lucene" / "versions" / republish(root))
    assert (root / "tiny" / "lucene" / "versions" / good).is_dir(), "the served (leased, verified) version was pruned"
    restarted = engine_over(root)  # a replica started now serves the last good version
    assert served(restarted) == good and restarted.ready()


def test_retention_is_a_setting_and_never_removes_current(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCH_INDEX_KEEP_VERSIONS", "1")
    for i in range(3):
        with publishing(tmp_path, "c", "i") as tmp:
            (tmp / "data").write_text(str(i))
            (tmp / "manifest.json").write_text(Manifest(kind="t", collection="c", doc_count=1, source_checksum="x").to_json())
    versions = list((tmp_path / "c" / "i" / "versions").iterdir())
    assert len(versions) == 1 and versions[0] == (tmp_path / "c" / "i" / "current").resolve()


# ------------------------------------------------------------------ finding 4: manifest schema
@pytest.mark.parametrize("field,value", [("version", 5), ("files", ["lucene"]), ("doc_count", "many"), ("sha256", 3)])
def test_manifest_with_a_wrong_type_is_refused_not_a_500(root, field, value):
    settings = Settings(collections=["tiny"], admin_key_hashes=[hash_key(ADMIN)], index_root=root)
    with TestClient(create_app(settings, engine=engine_over(root))) as c:
        before = c.get("/indexes").json()["tiny"]["lucene"]
        new = (root / "tiny" / "lucene" / "versions" / republish(root)) / "manifest.json"
        data = json.loads(new.read_text())
        data[field] = value
        new.write_text(json.dumps(data))
        r = c.post("/admin/reload", headers={"x-admin-key": ADMIN})
        assert r.status_code == 200 and "manifest" in r.json()["refused"]["tiny/bm25"]
        assert r.json()["versions"]["tiny"]["lucene"] == before
        assert c.post("/search", json={"query": "volcano"}).status_code == 200


def test_watcher_does_not_retry_a_refused_manifest_and_counts_it(root):
    settings = Settings(collections=["tiny"], reload_poll_s=0.05)
    with TestClient(create_app(settings, engine=engine_over(root))) as c:
        new = (root / "tiny" / "lucene" / "versions" / republish(root)) / "manifest.json"
        data = json.loads(new.read_text())
        data["files"] = ["oops"]
        new.write_text(json.dumps(data))
        time.sleep(1.0)
        metrics = c.get("/metrics").text
        assert 'search_index_reloads_total{outcome="refused"} 1.0' in metrics
        assert 'search_index_reloads_total{outcome="error"}' not in metrics


# ------------------------------------------------------------------ finding 6: damage in place
def test_damage_in_place_turns_readiness_off_and_falls_back_by_itself(root):
    first = served(engine_over(root))
    settings = Settings(collections=["tiny"], reload_poll_s=0.1)
    engine = engine_over(root)
    newer = republish(root)
    engine.reload()
    assert served(engine) == newer != first
    with TestClient(create_app(settings, engine=engine)) as c:
        assert c.get("/readyz").status_code == 200
        overwrite_same_size(root / "tiny" / "lucene" / "versions" / newer)
        seen_503, deadline = False, time.monotonic() + 5
        while served(engine) != first:
            seen_503 = seen_503 or c.get("/readyz").status_code == 503
            assert time.monotonic() < deadline, "did not fall back to the last good version within 5 s"
            time.sleep(0.02)
        assert c.get("/readyz").status_code == 200
        assert c.post("/search", json={"query": "volcano lava magma"}).json()["hits"][0]["doc_id"] == "d2"
        assert 'search_index_reloads_total{outcome="fallback"}' in c.get("/metrics").text


def test_readiness_reflects_a_damaged_served_index(root):
    engine = engine_over(root)
    with TestClient(create_app(Settings(collections=["tiny"]), engine=engine)) as c:
        assert c.get("/readyz").status_code == 200
        overwrite_same_size(root / "tiny" / "lucene" / "current")
        r = c.get("/readyz")
        assert r.status_code == 503 and "damaged" in r.json()["status"]
