"""Build a Lucene (BM25) index of a collection with Anserini's SimpleIndexer.

Documents are indexed as ``contents = title + " " + text`` (the BEIR "flat"
setting that Pyserini's published SciFact number uses), with positions and
document vectors stored, in ``threads`` indexing threads.
"""

from __future__ import annotations

import json
from pathlib import Path

from indexer.progress import progress
from pipeline.core.config import LuceneIndexConfig
from pipeline.core.types import Document
from pipeline.runtime.java import start_jvm
from pipeline.scorers.passages import passage_text
from pipeline.storage.collection import corpus_path, file_checksum, iter_corpus
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import write_docstore
from pipeline.storage.index_store import LUCENE_DIR, Manifest, write_manifest

BATCH = 2000


def build_lucene(dataset: Path, out: Path, cfg: LuceneIndexConfig, collection: str, threads: int = 2) -> Manifest:
    """Index ``dataset`` into the (temporary) folder ``out`` and write its manifest."""
    start_jvm()
    from pyserini.index.lucene import LuceneIndexer

    source = corpus_path(dataset)
    checksum = file_checksum(source)
    docs = list(iter_corpus(dataset))  # validates ids and emptiness before touching Lucene
    args = ["-index", str(out / LUCENE_DIR), "-language", cfg.language, "-storePositions", "-storeDocvectors"]
    writer = LuceneIndexer(args=args, threads=threads)
    bar = progress(len(docs), f"lucene {collection}")
    try:
        for i in range(0, len(docs), BATCH):
            batch = docs[i : i + BATCH]
            writer.add_batch_raw([json.dumps({"id": d.doc_id, "contents": _contents(d.title, d.text, cfg)}) for d in batch])
            bar.update(len(batch))
    finally:
        writer.close()
        bar.close()
    write_docstore(out / DOCSTORE, docs)
    manifest = Manifest(
        kind="lucene",
        collection=collection,
        doc_count=len(docs),
        source_checksum=checksum,
        params={"language": cfg.language, "fields": cfg.fields, "source": source.name},
    )
    write_manifest(out, manifest)
    return manifest


def _contents(title: str, text: str, cfg: LuceneIndexConfig) -> str:
    if cfg.fields == "title+text":
        return passage_text(Document("", title, text))
    return text
