"""BM25 over a Lucene index (Pyserini / Anserini).

The index is built by ``python -m indexer build`` (see ``indexer/lucene.py``);
this stage opens the published version, sets k1/b and the query analyzer of
the index's language, and searches a batch with several threads.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Sequence

from pydantic import Field

from pipeline.core.build_context import BuildContext, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.errors import IndexCorruptError, IndexMismatchError
from pipeline.core.stage import Stage
from pipeline.core.types import Hit, Query, Results
from pipeline.runtime.java import JVM_CALLS, mark_jvm_thread, start_jvm
from pipeline.storage.index_store import LUCENE_DIR, Manifest, resolve


class BM25Config(StageConfig):
    type: str = "bm25"
    index: str = "lucene"
    k1: float = Field(default=0.9, gt=0, le=10)
    b: float = Field(default=0.4, ge=0, le=1)
    k: int = Field(default=1000, ge=1, le=10_000)
    threads: int = Field(default=2, ge=1, le=64)


class BM25(Stage):
    """Batch BM25 retrieval with Pyserini's ``LuceneSearcher``.

    Example::

        bm25 = BM25.from_index(Path("indexes/scifact/lucene/current"), k1=0.9, b=0.4)
        results = bm25([Query("1", "0-dimensional biomaterials")])
    """

    name = "bm25"

    def __init__(self, folder: Path, manifest: Manifest, k1: float = 0.9, b: float = 0.4, k: int = 1000, threads: int = 2):
        if manifest.kind != "lucene":
            raise IndexMismatchError(f"{folder} is a {manifest.kind!r} index, BM25 needs a lucene index")
        start_jvm()
        from pyserini.search.lucene import LuceneSearcher

        self.language = manifest.params.get("language", "en")
        with JVM_CALLS:  # a reload opens a searcher while requests search the old one
            try:
                self.searcher = LuceneSearcher(str(Path(folder) / LUCENE_DIR))
            except Exception as exc:  # jnius raises JavaException on a broken index
                raise IndexCorruptError(f"Lucene could not open {folder}: {exc}") from exc
            if self.language != "en":
                self.searcher.set_language(self.language)
            self.searcher.set_bm25(k1, b)
        self.folder, self.manifest = Path(folder), manifest
        self.k, self.threads = k, threads

    @classmethod
    def from_index(cls, folder: Path, **kwargs) -> "BM25":
        folder = Path(folder).resolve()
        manifest = Manifest.read(folder)
        manifest.verify(folder)
        return cls(folder, manifest, **kwargs)

    def with_depth(self, k: int) -> "BM25":
        if k >= self.k:
            return self
        shallow = copy.copy(self)  # shares the searcher; only the depth differs
        shallow.k = k
        return shallow

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        if not queries:
            return {}
        texts = [q.text for q in queries]
        qids = [q.query_id for q in queries]
        mark_jvm_thread()  # this thread calls into the JVM: detach it when it ends
        # Lucene's IndexSearcher is thread-safe, pyjnius is not (see JVM_CALLS): one call at a time.
        with JVM_CALLS:
            if len(queries) == 1:
                raw = {qids[0]: self.searcher.search(texts[0], k=self.k)}
            else:
                raw = self.searcher.batch_search(texts, qids, k=self.k, threads=self.threads)
            return {
                qid: [Hit(qid, h.docid, float(h.score), {self.name: float(h.score)}) for h in raw.get(qid, [])]
                for qid in qids
            }


def _build(cfg: BM25Config, ctx: BuildContext) -> BM25:
    folder, manifest = resolve(ctx.index_root, ctx.collection, cfg.index)
    threads = min(cfg.threads, os.cpu_count() or 1)
    return BM25(folder, manifest, k1=cfg.k1, b=cfg.b, k=cfg.k, threads=threads)


register_stage("bm25", BM25Config, _build)
