"""The document store: same answers from memory and from SQLite; corrupt files refused."""

from __future__ import annotations

import pytest

from pipeline.core.errors import IndexCorruptError
from pipeline.core.types import Document
from pipeline.storage.docstore import DocStore, write_docstore

DOCS = [Document(f"d{i}", f"title {i}", f"text {i}") for i in range(1200)]


@pytest.mark.parametrize("preload", [10_000, 0])
def test_lookup_in_memory_and_sqlite(tmp_path, preload):
    write_docstore(tmp_path / "s.sqlite", DOCS)
    store = DocStore(tmp_path / "s.sqlite", preload_max_docs=preload)
    assert store.count == 1200
    got = store.get_many(["d5", "nope", "d1100", "d5"])
    assert set(got) == {"d5", "d1100"} and got["d1100"].title == "title 1100"
    assert len(store.get_many([d.doc_id for d in DOCS])) == 1200
    assert store.get("zz") is None and store.get_many([]) == {}


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(IndexCorruptError, match="missing"):
        DocStore(tmp_path / "none.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(IndexCorruptError, match="unreadable"):
        DocStore(bad)
