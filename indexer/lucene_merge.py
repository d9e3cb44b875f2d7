"""Merge per-shard Lucene indexes and document stores into one.

Lucene's ``IndexWriter.addIndexes`` copies the shards' segments as they are
(postings, norms, stored fields), so the merged index has the same term
statistics as an index built in one process: the same BM25 scores for every
document. Document stores (SQLite) are merged with ``ATTACH`` + ``INSERT``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Sequence

from pipeline.core.errors import CollectionError, IndexCorruptError
from pipeline.runtime.java import start_jvm
from pipeline.storage.docstore import write_docstore


def merge_lucene(sources: Sequence[Path], dest: Path) -> int:
    """Write one Lucene index at ``dest`` holding every document of ``sources``; returns its doc count."""
    if not sources:
        raise ValueError("merge_lucene needs at least one source index")
    start_jvm()
    from jnius import JavaException, autoclass

    file_cls = autoclass("java.io.File")
    fs_directory = autoclass("org.apache.lucene.store.FSDirectory")
    writer_config = autoclass("org.apache.lucene.index.IndexWriterConfig")
    index_writer = autoclass("org.apache.lucene.index.IndexWriter")
    open_mode = autoclass("org.apache.lucene.index.IndexWriterConfig$OpenMode")

    config = writer_config()
    config.setOpenMode(open_mode.CREATE)
    Path(dest).mkdir(parents=True, exist_ok=True)
    target = fs_directory.open(file_cls(str(dest)).toPath())
    dirs = [fs_directory.open(file_cls(str(s)).toPath()) for s in sources]
    writer = index_writer(target, config)
    try:
        writer.addIndexes(*dirs)  # pyjnius maps the Java varargs Directory... to positional arguments
        writer.commit()
        count = int(writer.getDocStats().numDocs)
    except JavaException as exc:
        raise IndexCorruptError(f"merging Lucene shards into {dest} failed: {exc}") from exc
    finally:
        writer.close()
        for d in dirs:
            d.close()
        target.close()
    return count


def merge_docstores(sources: Sequence[Path], dest: Path) -> int:
    """One SQLite document store with the rows of every shard store; returns the row count.

    Raises CollectionError if two shards hold the same id (cannot happen with hash sharding).
    """
    write_docstore(dest, [])  # creates the table with the schema every store shares
    con = sqlite3.connect(dest)
    try:
        for i, src in enumerate(sources):
            con.execute(f"ATTACH DATABASE ? AS s{i}", (str(src),))
            try:
                con.execute(f"INSERT INTO docs SELECT doc_id, title, text FROM s{i}.docs")
            except sqlite3.IntegrityError as exc:
                raise CollectionError(f"document store {src} repeats an id of another shard: {exc}") from exc
            con.commit()
            con.execute(f"DETACH DATABASE s{i}")
        return int(con.execute("SELECT COUNT(*) FROM docs").fetchone()[0])
    finally:
        con.close()
