"""Distributed batch indexing on Ray Data: shard, build shards in parallel, merge or publish shards.

The collection is read with ``ray.data.read_text`` (one file or a folder of
JSONL parts), each document is hash-assigned to a shard
(:func:`indexer.shards.shard_of`), and ``groupby(shard).map_groups`` builds one
Lucene index and one document store per shard in parallel Ray tasks. Then:

- ``layout="merged"`` (default): the driver merges the shards with Lucene's
  ``addIndexes`` into one ``lucene`` index, byte-for-byte the same statistics as
  the single-process build, so the ``bm25`` stage returns the same ranking;
- ``layout="shards"``: the shards are published as they are (kind
  ``lucene-shards``) for the scatter-gather stage ``sharded_bm25``
  (:mod:`pipeline.stages.sharded`). Each shard scores with its own IDF and
  average length, so scores differ slightly from one index.

Dense (FAISS) indexes take the same road with an encoding step on a pool of
encoder actors (GPU workers when the cluster has GPUs), see
:mod:`indexer.distributed_dense`.

Shard folders are written under the build folder, which must be on storage every
Ray worker sees (one machine, or a shared volume on a cluster).

Example::

    with publishing(root, "scifact", "lucene") as tmp:
        build_lucene_distributed(Path("../shared/data/scifact"), tmp, LuceneIndexConfig(),
                                 "scifact", options=RayOptions(num_shards=4))
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexer.lucene import _contents
from indexer.lucene_merge import merge_docstores, merge_lucene
from indexer.shards import check_unique, parse_corpus_lines, shard_dir, shard_name
from pipeline.core.config import IndexConfig, LuceneIndexConfig
from pipeline.core.errors import CollectionError, PipelineError
from pipeline.core.settings_paths import REPO
from pipeline.core.types import Document
from pipeline.runtime.java import keep_native_signal_handlers, start_jvm
from pipeline.storage.collection import corpus_path, file_checksum
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import write_docstore
from pipeline.storage.index_store import LUCENE_DIR, SHARDED_KIND, Manifest, publishing, resolve, write_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    """How to run a distributed build.

    ``address``: ``None`` starts a local Ray (``num_cpus`` workers), ``"auto"``
    joins the cluster this process runs in (a KubeRay RayJob).
    """

    num_shards: int = 4
    layout: Literal["merged", "shards"] = "merged"
    address: str | None = None
    num_cpus: int | None = None
    jvm_heap: str = "1g"

    def __post_init__(self) -> None:
        if not 1 <= self.num_shards <= 4096:
            raise ValueError(f"num_shards must be in 1..4096, got {self.num_shards}")
        if self.layout not in ("merged", "shards"):
            raise ValueError(f"layout must be 'merged' or 'shards', got {self.layout!r}")


def ensure_ray(options: RayOptions) -> bool:
    """Start (or join) Ray unless it already runs in this process; True if this call started it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("distributed indexing needs Ray: pip install 'neural-search[dist]'") from exc
    if ray.is_initialized():
        return False
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "SEARCH_JVM_HEAP": options.jvm_heap, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with keep_native_signal_handlers():  # Ray's crash handler would replace the JVM's (pipeline/runtime/java.py)
        ray.init(
            address=options.address,
            num_cpus=options.num_cpus if options.address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env},
        )
    return True


def shutdown_ray() -> None:
    """``ray.shutdown()``, leaving the crash signals' handlers as they were (it resets them to the default)."""
    import ray

    with keep_native_signal_handlers():
        ray.shutdown()


def build_lucene_shard(group: dict[str, np.ndarray], out: str, cfg: LuceneIndexConfig) -> dict[str, np.ndarray]:
    """Ray task body: one shard's documents -> its Lucene index and document store."""
    start_jvm()
    from pyserini.index.lucene import LuceneIndexer

    shard = int(group["shard"][0])
    ids = [str(i) for i in group["doc_id"]]
    check_unique(ids, f"shard {shard_name(shard)}")
    folder = shard_dir(Path(out), shard)
    folder.mkdir(parents=True, exist_ok=True)
    args = ["-index", str(folder / LUCENE_DIR), "-language", cfg.language, "-storePositions", "-storeDocvectors"]
    docs = [Document(i, str(t), str(x)) for i, t, x in zip(ids, group["title"], group["text"], strict=True)]
    writer = LuceneIndexer(args=args, threads=1)
    try:
        writer.add_batch_raw([json.dumps({"id": d.doc_id, "contents": _contents(d.title, d.text, cfg)}) for d in docs])
    finally:
        writer.close()
    write_docstore(folder / DOCSTORE, docs)
    return {"shard": np.array([shard]), "doc_count": np.array([len(ids)])}


def build_lucene_distributed(
    dataset: Path, out: Path, cfg: LuceneIndexConfig, collection: str, threads: int = 2, options: RayOptions | None = None
) -> Manifest:
    """Build ``dataset`` into the (temporary) folder ``out`` on Ray and write its manifest."""
    options = options or RayOptions()
    source = corpus_path(dataset)
    checksum = file_checksum(source)
    out = Path(out).resolve()
    started = ensure_ray(options)
    try:
        stats = _run_shard_builds(source, out, cfg, options.num_shards)
    finally:
        if started:
            shutdown_ray()
    shards = sorted((int(s["shard"]), int(s["doc_count"])) for s in stats)
    total = sum(n for _, n in shards)
    if total == 0:
        raise CollectionError(f"{source}: the corpus is empty")
    folders = [shard_dir(out, s) for s, _ in shards]
    stored = merge_docstores([f / DOCSTORE for f in folders], out / DOCSTORE)
    params: dict[str, Any] = {"language": cfg.language, "fields": cfg.fields, "source": source.name,
                              "build": "ray", "num_shards": options.num_shards}
    if options.layout == "merged":
        merged = merge_lucene([f / LUCENE_DIR for f in folders], out / LUCENE_DIR)
        if merged != total or stored != total:
            raise CollectionError(f"merge lost documents: {total} built, {merged} in Lucene, {stored} stored")
        shutil.rmtree(out / "shards")
        kind = "lucene"
    else:
        for f in folders:
            (f / DOCSTORE).unlink()
        params["shards"] = [{"name": shard_name(s), "doc_count": n} for s, n in shards]
        kind = SHARDED_KIND
    manifest = Manifest(kind=kind, collection=collection, doc_count=total, source_checksum=checksum, params=params)
    write_manifest(out, manifest)
    logger.info("%s: %d docs in %d shards (%s)", collection, total, len(shards), options.layout)
    return manifest


def _run_shard_builds(source: Path, out: Path, cfg: LuceneIndexConfig, num_shards: int) -> list[dict[str, Any]]:
    import ray.data

    def parse(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return parse_corpus_lines(list(batch["text"]), num_shards)

    ds = ray.data.read_text(str(source)).map_batches(parse, batch_format="numpy")
    built = ds.groupby("shard", num_partitions=num_shards).map_groups(
        build_lucene_shard, batch_format="numpy", fn_kwargs={"out": str(out), "cfg": cfg}
    )
    try:
        return built.take_all()
    except Exception as exc:  # Ray wraps errors raised in tasks; surface ours typed
        raise unwrap_ray_error(exc) from exc


def unwrap_ray_error(exc: BaseException) -> BaseException:
    """The first PipelineError in a Ray exception chain (Ray wraps task errors), else ``exc``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # RayTaskError keeps the task's own exception here
        if isinstance(cause, PipelineError):
            return unwrap_ray_error(cause)
        if isinstance(e, PipelineError):
            typed = next(c for c in type(e).__mro__ if c.__module__ == "pipeline.core.errors")
            return typed(str(e))
        todo.extend([e.__cause__, e.__context__, cause])
    return exc


def publish_distributed(
    dataset: Path, collection: str, name: str, cfg: IndexConfig, index_root: Path, options: RayOptions
) -> tuple[Path, Manifest]:
    """Build on Ray and publish atomically as ``<root>/<collection>/<name>/current`` (lucene or faiss)."""
    if cfg.type == "faiss" and options.layout != "merged":
        raise ValueError("dense indexes are published merged (layout 'shards' is for lucene)")
    with publishing(index_root, collection, name) as tmp:
        if cfg.type == "faiss":
            from indexer.distributed_dense import build_faiss_distributed

            build_faiss_distributed(dataset, tmp, cfg, collection, options=options)
        else:
            build_lucene_distributed(dataset, tmp, cfg, collection, options=options)
    return resolve(index_root, collection, name)
