"""Atomic publishing, corruption detection and bad collections."""

from __future__ import annotations

import json
import shutil

import pytest

from indexer.build import ensure_index
from pipeline.core.config import LuceneIndexConfig
from pipeline.core.errors import CollectionError, IndexCorruptError, IndexNotFoundError
from pipeline.storage.index_store import Manifest, check_name, publishing, resolve, write_manifest


def _manifest():
    return Manifest(kind="test", collection="c", doc_count=1, source_checksum="x")


def test_publish_swaps_current_atomically(tmp_path):
    with publishing(tmp_path, "c", "i") as tmp:
        (tmp / "data").write_text("v1")
        write_manifest(tmp, _manifest())
    folder1, m1 = resolve(tmp_path, "c", "i")
    assert (folder1 / "data").read_text() == "v1" and m1.files == {"data": 2}
    with publishing(tmp_path, "c", "i") as tmp:
        (tmp / "data").write_text("v22")
        write_manifest(tmp, _manifest())
    folder2, _ = resolve(tmp_path, "c", "i")
    assert folder2 != folder1 and (folder2 / "data").read_text() == "v22"


def test_failed_build_leaves_published_index_untouched(tmp_path):
    with publishing(tmp_path, "c", "i") as tmp:
        (tmp / "data").write_text("good")
        write_manifest(tmp, _manifest())
    with pytest.raises(RuntimeError):
        with publishing(tmp_path, "c", "i") as tmp:
            (tmp / "data").write_text("half")
            raise RuntimeError("interrupted")
    folder, _ = resolve(tmp_path, "c", "i")
    assert (folder / "data").read_text() == "good"
    assert not list((tmp_path / "c" / "i").glob(".building-*"))


def test_build_without_manifest_is_not_published(tmp_path):
    with pytest.raises(IndexCorruptError):
        with publishing(tmp_path, "c", "i") as tmp:
            (tmp / "data").write_text("x")
    with pytest.raises(IndexNotFoundError, match="python -m indexer build"):
        resolve(tmp_path, "c", "i")


def test_truncated_file_is_detected(tmp_path):
    with publishing(tmp_path, "c", "i") as tmp:
        (tmp / "data").write_text("0123456789")
        write_manifest(tmp, _manifest())
    folder, _ = resolve(tmp_path, "c", "i")
    (folder / "data").write_text("01234")
    with pytest.raises(IndexCorruptError, match="5 bytes, manifest says 10"):
        resolve(tmp_path, "c", "i")
    (folder / "data").unlink()
    with pytest.raises(IndexCorruptError, match="missing"):
        resolve(tmp_path, "c", "i")


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "x" * 200, "a..b"])
def test_path_like_names_rejected(name):
    with pytest.raises(ValueError, match="invalid"):
        check_name(name)


def _write_corpus(path, rows):
    path.mkdir()
    (path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_lucene_build_is_reused_then_rebuilt_when_source_changes(tmp_path, tiny_dataset):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    cfg = LuceneIndexConfig()
    _, m1, built1 = ensure_index(data, "t", "lucene", cfg, tmp_path / "idx")
    _, m2, built2 = ensure_index(data, "t", "lucene", cfg, tmp_path / "idx")
    assert built1 and not built2 and m1.version == m2.version and m1.doc_count == 12
    with (data / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "d13", "title": "New", "text": "a new document"}) + "\n")
    _, m3, built3 = ensure_index(data, "t", "lucene", cfg, tmp_path / "idx")
    assert built3 and m3.doc_count == 13


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "empty"),
        ([{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}], "duplicate document id 'a'"),
        ([{"text": "no id"}], "without '_id'"),
    ],
)
def test_bad_collection_keeps_published_index(tmp_path, tiny_dataset, rows, message):
    root = tmp_path / "idx"
    cfg = LuceneIndexConfig()
    good_folder, _, _ = ensure_index(tiny_dataset, "t", "lucene", cfg, root)
    bad = _write_corpus(tmp_path / "bad", rows)
    with pytest.raises(CollectionError, match=message):
        ensure_index(bad, "t", "lucene", cfg, root)
    folder, manifest = resolve(root, "t", "lucene")
    assert folder == good_folder and manifest.doc_count == 12


def test_not_json_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{oops\n')
    with pytest.raises(CollectionError, match="corpus.jsonl:2: not a JSON line"):
        ensure_index(bad, "t", "lucene", LuceneIndexConfig(), tmp_path / "idx")


def test_concurrent_ensure_builds_once(tmp_path, tiny_dataset):
    """Two jobs needing the same index at once: one builds, the other waits and reuses it."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = LuceneIndexConfig()
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(ensure_index, tiny_dataset, "t", "lucene", cfg, tmp_path / "idx") for _ in range(2)]
        results = [f.result() for f in futures]
    assert sorted(built for _, _, built in results) == [False, True]
    assert results[0][1].version == results[1][1].version
    assert len(list((tmp_path / "idx" / "t" / "lucene" / "versions").iterdir())) == 1
