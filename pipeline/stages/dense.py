"""Dense retrieval: encode queries (batched, with an LRU cache), search a published FAISS index.

The index is built by ``python -m indexer build`` (``indexer/dense.py``). Opening it with an
encoder whose identity or dimension differs from the manifest's raises IndexMismatchError; a
truncated or unreadable FAISS file raises IndexCorruptError.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field

from pipeline.core.build_context import BuildContext, register_stage
from pipeline.core.config import FaissIndexConfig, StageConfig
from pipeline.core.errors import ConfigError, IndexCorruptError, IndexMismatchError
from pipeline.core.stage import Stage
from pipeline.core.types import Hit, Query, Results
from pipeline.encoders.bi_encoders import Encoder, load_encoder
from pipeline.storage.index_store import Manifest, resolve

logger = logging.getLogger(__name__)

SHARED_CACHE_KEY = "query_embedding_cache"
"""BuildContext key of the service's shared query-embedding cache (``service.cache.QueryEmbeddingCache``)."""


class DenseConfig(StageConfig):
    type: str = "dense"
    index: str = "minilm"
    model: str | None = None
    """Query encoder (default: the model the index config names)."""
    k: int = Field(default=1000, ge=1, le=10_000)
    ef_search: int | None = Field(default=None, ge=1, le=100_000)
    """HNSW search breadth (HNSW indexes only)."""
    nprobe: int | None = Field(default=None, ge=1, le=100_000)
    """IVF lists searched per query (IVF indexes only)."""
    cache_size: int = Field(default=10_000, ge=0, le=10_000_000)
    """Query embeddings kept in the LRU cache (0 = no cache)."""


class QueryEmbeddingCache:
    """A thread-safe LRU of ``text -> vector``."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, text: str) -> np.ndarray | None:
        with self._lock:
            vec = self._data.get(text)
            if vec is None:
                self.misses += 1
                return None
            self._data.move_to_end(text)
            self.hits += 1
            return vec

    def put(self, text: str, vec: np.ndarray) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[text] = vec
            self._data.move_to_end(text)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class DenseRetriever(Stage):
    """Batch dense retrieval over a FAISS index.

    Example::

        enc = load_encoder("minilm")
        dense = DenseRetriever.from_index(Path("indexes/scifact/minilm/current"), enc, k=100)
        results = dense([Query("1", "0-dimensional biomaterials")])
    """

    name = "dense"

    def __init__(self, folder: Path, manifest: Manifest, encoder: Encoder, k: int = 1000,
                 ef_search: int | None = None, nprobe: int | None = None, cache_size: int = 10_000,
                 shared_cache: Any = None):
        """``shared_cache``: optional second-level cache with ``get_many(model, texts)`` and
        ``set_many(model, texts, vectors)`` (the service's Redis-backed ``QueryEmbeddingCache``)."""
        check_compatible(folder, manifest, encoder)
        self.folder, self.manifest, self.encoder, self.k = Path(folder), manifest, encoder, k
        self.index = read_faiss_index(self.folder / manifest.params.get("index_file", "faiss.index"))
        self.doc_ids = _read_doc_ids(self.folder / manifest.params.get("docid_map", "docids.json"))
        if self.index.ntotal != manifest.doc_count or len(self.doc_ids) != manifest.doc_count or self.index.d != encoder.dim:
            raise IndexCorruptError(
                f"{folder}: FAISS holds {self.index.ntotal} vectors of {self.index.d} dims and the doc-id map "
                f"{len(self.doc_ids)} ids; the manifest says {manifest.doc_count} docs of {encoder.dim} dims"
            )
        _set_search_params(self.index, ef_search, nprobe)
        self.normalize = bool(manifest.params.get("normalize", True))
        self.cache = QueryEmbeddingCache(cache_size)
        self.shared_cache = shared_cache

    @classmethod
    def from_index(cls, folder: Path, encoder: Encoder, **kwargs) -> "DenseRetriever":
        folder = Path(folder).resolve()
        manifest = Manifest.read(folder)
        manifest.verify(folder)
        return cls(folder, manifest, encoder, **kwargs)

    def with_depth(self, k: int) -> "DenseRetriever":
        if k >= self.k:
            return self
        shallow = copy.copy(self)  # shares index, encoder and cache
        shallow.k = k
        return shallow

    def embed(self, texts: list[str]) -> np.ndarray:
        """Query vectors for ``texts``; cached ones are reused, the rest encoded in one batch."""
        out = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            vec = self.cache.get(text)
            if vec is None:
                missing.setdefault(text, []).append(i)
            else:
                out[i] = vec
        if missing and self.shared_cache is not None:
            for text, vec in self._shared_get(list(missing)).items():
                if vec.shape == (self.encoder.dim,):
                    out[missing.pop(text)] = vec
                    self.cache.put(text, vec.copy())
        if missing:
            fresh = np.asarray(self.encoder.encode_queries(list(missing)), dtype=np.float32)
            if self.normalize:
                fresh /= np.maximum(np.linalg.norm(fresh, axis=1, keepdims=True), 1e-12)
            for (text, rows), vec in zip(missing.items(), fresh, strict=True):
                out[rows] = vec
                self.cache.put(text, vec.copy())
            if self.shared_cache is not None:
                self._shared_set(list(missing), fresh)
        return out

    def _shared_get(self, texts: list[str]) -> dict[str, np.ndarray]:
        try:
            return self.shared_cache.get_many(self.encoder.identity, texts)
        except Exception as exc:  # noqa: BLE001 - a cache never fails a search
            logger.warning("shared query-embedding cache unavailable: %s", exc)
            return {}

    def _shared_set(self, texts: list[str], vectors: np.ndarray) -> None:
        try:
            self.shared_cache.set_many(self.encoder.identity, texts, vectors)
        except Exception as exc:  # noqa: BLE001
            logger.warning("shared query-embedding cache unavailable: %s", exc)

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        if not queries:
            return {}
        vectors = self.embed([q.text for q in queries])
        k = min(self.k, self.index.ntotal)
        scores, ids = self.index.search(vectors, k)
        results: Results = {}
        for q, row_scores, row_ids in zip(queries, scores, ids, strict=True):
            hits = [Hit(q.query_id, self.doc_ids[i], float(s), {self.name: float(s)})
                    for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
            hits.sort(key=lambda h: (-h.score, h.doc_id))
            results[q.query_id] = hits
        return results


def check_compatible(folder: Path, manifest: Manifest, encoder: Encoder) -> None:
    """Refuse an index built with another model or dimension than ``encoder``."""
    if manifest.kind != "faiss":
        raise IndexMismatchError(f"{folder} is a {manifest.kind!r} index; dense retrieval needs a faiss index")
    dim = manifest.params.get("dim")
    if dim != encoder.dim:
        raise IndexMismatchError(
            f"{folder} holds {dim}-d vectors but the query encoder {encoder.identity} makes {encoder.dim}-d ones: "
            f"rebuild the index with this model or configure the model it was built with"
        )
    built_with = manifest.params.get("model_identity")
    if built_with != encoder.identity:
        raise IndexMismatchError(
            f"{folder} was built with {built_with}, not with the query encoder {encoder.identity}: "
            f"rebuild it (python -m indexer build --force) or configure the model it was built with"
        )


def read_faiss_index(path: Path):
    """Read a FAISS index file; a missing, truncated or garbled file raises IndexCorruptError."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - core dependency
        raise ImportError("FAISS is required for dense retrieval: pip install faiss-cpu") from exc
    if not Path(path).is_file():
        raise IndexCorruptError(f"FAISS index file missing: {path}")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexCorruptError(f"FAISS could not read {path} (truncated or corrupt): {str(exc).splitlines()[0]}") from exc


def _read_doc_ids(path: Path) -> list[str]:
    try:
        ids = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"doc-id map {path} is unreadable: {exc}") from exc
    if not isinstance(ids, list):
        raise IndexCorruptError(f"doc-id map {path} is not a JSON list")
    return [str(x) for x in ids]


def _set_search_params(index, ef_search: int | None, nprobe: int | None) -> None:
    import faiss

    space = faiss.ParameterSpace()
    for name, value in (("efSearch", ef_search), ("nprobe", nprobe)):
        if value is None:
            continue
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError as exc:
            raise ConfigError(f"{name}={value} does not apply to this FAISS index: {str(exc).splitlines()[-1]}") from exc


def _build(cfg: DenseConfig, ctx: BuildContext) -> DenseRetriever:
    index_cfg = ctx.index_config(cfg.index)
    if not isinstance(index_cfg, FaissIndexConfig):
        raise ConfigError(f"dense stage: index {cfg.index!r} is a {index_cfg.type!r} index, not faiss")
    folder, manifest = resolve(ctx.index_root, ctx.collection, cfg.index)
    spec = cfg.model or index_cfg.model
    encoder = ctx.shared(
        ("encoder", spec, ctx.device),
        lambda: load_encoder(spec, ctx.device, max_length=index_cfg.max_length, models_dir=ctx.models_dir),
    )
    shared_cache = ctx.shared(SHARED_CACHE_KEY, lambda: None)  # outside the factory: ctx.shared's lock is not reentrant
    shared = ctx.shared(  # one FAISS index and cache per index/encoder/settings, shared by pipelines
        ("dense", manifest.version, cfg.index, spec, cfg.ef_search, cfg.nprobe, cfg.cache_size),
        lambda: DenseRetriever(folder, manifest, encoder, k=cfg.k, ef_search=cfg.ef_search, nprobe=cfg.nprobe,
                               cache_size=cfg.cache_size, shared_cache=shared_cache),
    )
    stage = copy.copy(shared)  # the registry sets name/fail_open on what it gets
    stage.k = cfg.k
    return stage


register_stage("dense", DenseConfig, _build)
