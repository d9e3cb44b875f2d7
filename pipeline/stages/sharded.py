"""Scatter-gather BM25 over an index published as shards (``build-distributed --layout shards``).

Every shard is searched for the whole batch in turn, each with ``threads`` Lucene threads (calls
into Java from several Python threads are serialised anyway, see
:data:`pipeline.runtime.java.JVM_CALLS`), and the per-shard top-k lists are merged by score,
ties broken by doc id. Each shard scores with its own statistics (document
count, document frequencies, average length), so scores are close to, but not
equal to, those of one index over the whole collection; with hash sharding the
difference shrinks as shards grow.

The shard index is named by ``shards_index`` (not ``index``) on purpose: it is
built only by the distributed indexer, so the eval job must not try to build it
as a plain Lucene index. Config::

    - {type: sharded_bm25, shards_index: lucene-shards, k1: 0.9, b: 0.4, k: 1000}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from pydantic import Field

from pipeline.core.build_context import BuildContext, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.errors import IndexCorruptError, IndexMismatchError
from pipeline.core.stage import Stage
from pipeline.core.types import Hit, Query, Results, sort_hits
from pipeline.stages.bm25 import BM25
from pipeline.storage.index_store import SHARDED_KIND, Manifest, check_name, resolve


class ShardedBM25Config(StageConfig):
    type: str = "sharded_bm25"
    shards_index: str = "lucene-shards"
    k1: float = Field(default=0.9, gt=0, le=10)
    b: float = Field(default=0.4, ge=0, le=1)
    k: int = Field(default=1000, ge=1, le=10_000)
    threads: int = Field(default=2, ge=1, le=64)


class ShardedBM25(Stage):
    """BM25 over N Lucene shards, merged by score.

    Example::

        stage = ShardedBM25.from_index(Path("indexes/scifact/lucene-shards/current"), k=100)
        results = stage([Query("1", "0-dimensional biomaterials")])
    """

    name = "sharded_bm25"

    def __init__(self, folder: Path, manifest: Manifest, k1: float = 0.9, b: float = 0.4, k: int = 1000,
                 threads: int = 2):
        if manifest.kind != SHARDED_KIND:
            raise IndexMismatchError(f"{folder} is a {manifest.kind!r} index, sharded_bm25 needs {SHARDED_KIND!r}")
        shards = manifest.params.get("shards") or []
        if not shards:
            raise IndexCorruptError(f"{folder}: the manifest lists no shards")
        self.shards: list[BM25] = []
        for shard in shards:
            sub = Manifest(kind="lucene", collection=manifest.collection, doc_count=int(shard["doc_count"]),
                           source_checksum=manifest.source_checksum, params=manifest.params)
            shard_folder = Path(folder) / "shards" / check_name(shard["name"], "shard")
            self.shards.append(BM25(shard_folder, sub, k1=k1, b=b, k=k, threads=threads))
        self.folder, self.manifest, self.k = Path(folder), manifest, k

    @classmethod
    def from_index(cls, folder: Path, **kwargs) -> "ShardedBM25":
        folder = Path(folder).resolve()
        manifest = Manifest.read(folder)
        manifest.verify(folder)
        return cls(folder, manifest, **kwargs)

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        if not queries:
            return {}
        per_shard = [shard.transform(queries) for shard in self.shards]
        out: Results = {}
        for q in queries:
            hits = [h for results in per_shard for h in results.get(q.query_id, [])]
            merged = sort_hits(hits)[: self.k]
            out[q.query_id] = [Hit(q.query_id, h.doc_id, h.score, {self.name: h.score}) for h in merged]
        return out


def _build(cfg: ShardedBM25Config, ctx: BuildContext) -> ShardedBM25:
    folder, manifest = resolve(ctx.index_root, ctx.collection, cfg.shards_index)
    return ShardedBM25(folder, manifest, k1=cfg.k1, b=cfg.b, k=cfg.k, threads=min(cfg.threads, os.cpu_count() or 1))


register_stage("sharded_bm25", ShardedBM25Config, _build)
