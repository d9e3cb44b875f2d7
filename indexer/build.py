"""Build, or reuse, the indexes a collection needs, and publish each atomically."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import Iterable

from indexer.dense import build_faiss
from indexer.lucene import build_lucene
from pipeline.core.config import IndexConfig, ServiceConfig, parse_index
from pipeline.core.errors import IndexCorruptError, IndexNotFoundError
from pipeline.storage.collection import corpus_path, file_checksum
from pipeline.storage.index_store import Manifest, index_dir, publishing, resolve

logger = logging.getLogger(__name__)

BUILDERS = {"lucene": build_lucene, "faiss": build_faiss}
"""Index type -> the function that builds it into a temporary folder."""


def index_params_match(manifest: Manifest, cfg: IndexConfig, checksum: str) -> bool:
    """True when a published index was built from the same source with the same settings."""
    if manifest.source_checksum != checksum or manifest.kind != cfg.type:
        return False
    wanted = cfg.model_dump(exclude={"type", "batch_size"})
    return all(manifest.params.get(k) == v for k, v in wanted.items())


def ensure_index(
    dataset: Path, collection: str, name: str, cfg: IndexConfig, index_root: Path, force: bool = False, threads: int = 2
) -> tuple[Path, Manifest, bool]:
    """Return ``(folder, manifest, built)``; builds only when missing, stale or forced.

    The check and the build happen under one lock per index, so two jobs that need the same
    index at once build it once: the second waits, then finds it up to date.
    """
    checksum = file_checksum(corpus_path(dataset))
    base = index_dir(index_root, collection, name)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".ensure.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force:
            try:
                folder, manifest = resolve(index_root, collection, name)
                if index_params_match(manifest, cfg, checksum):
                    logger.info("index %s/%s is up to date (version %s)", collection, name, manifest.version)
                    return folder, manifest, False
                logger.info("index %s/%s is stale: rebuilding", collection, name)
            except (IndexNotFoundError, IndexCorruptError) as exc:
                logger.info("index %s/%s: %s; building", collection, name, exc)
        build = BUILDERS[cfg.type]
        with publishing(index_root, collection, name) as tmp:
            build(dataset, tmp, cfg, collection=collection, threads=threads)
        folder, manifest = resolve(index_root, collection, name)
    logger.info("published %s/%s version %s (%d docs)", collection, name, manifest.version, manifest.doc_count)
    return folder, manifest, True


def ensure_indexes(
    dataset: Path, collection: str, config: ServiceConfig, names: Iterable[str], index_root: Path, force: bool = False
) -> dict[str, Manifest]:
    out = {}
    for name in names:
        cfg = parse_index(name, config.indexes[name])
        _, manifest, _ = ensure_index(dataset, collection, name, cfg, index_root, force=force)
        out[name] = manifest
    return out
