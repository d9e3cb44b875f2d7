"""Build a dense (FAISS) index of a collection: encode every document, index, publish.

Documents are encoded as ``title + " " + text`` (the BEIR/MTEB convention), longest first so
that each batch pads little, in shards of :data:`SHARD_SIZE` documents. Each finished shard is
saved under ``<index dir>/.work-<key>/`` (``key`` = source checksum + model identity + encoding
settings), outside the publish folder: an interrupted build resumes from the shards already
there, and a rebuild with another FAISS factory reuses them instead of re-encoding (the latest
key's shards are kept; a successful build removes other keys'). The FAISS index is made by the configured factory string (``Flat``: exact inner
product; ``HNSW32``; ``IVF1024,PQ32x8``, trained on a sample) and written with a doc-id map, a
document store and a manifest that records the model identity, dimension, normalisation and metric.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.progress import progress
from pipeline.core.config import FaissIndexConfig
from pipeline.core.errors import ConfigError
from pipeline.core.types import Document
from pipeline.encoders.bi_encoders import Encoder, load_encoder
from pipeline.scorers.passages import passage_text
from pipeline.storage.collection import corpus_path, file_checksum, iter_corpus
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import write_docstore
from pipeline.storage.index_store import Manifest, write_manifest

logger = logging.getLogger(__name__)

SHARD_SIZE = 4096
INDEX_FILE = "faiss.index"
DOCIDS_FILE = "docids.json"
METRIC = "inner_product"


def document_text(doc: Document) -> str:
    """What the encoder sees of a document: ``title text`` (BEIR/MTEB convention; :func:`passage_text`)."""
    return passage_text(doc)


def build_faiss(
    dataset: Path, out: Path, cfg: FaissIndexConfig, collection: str, threads: int = 2,
    encoder: Encoder | None = None, device: str | None = None, shard_size: int = SHARD_SIZE,
) -> Manifest:
    """Encode ``dataset`` and write a FAISS index, doc ids, docstore and manifest into ``out``."""
    source = corpus_path(dataset)
    checksum = file_checksum(source)
    docs = list(iter_corpus(dataset))  # empty corpus / duplicate ids fail here, before any work
    encoder = encoder or load_encoder(cfg.model, device, dtype=cfg.dtype, batch_size=cfg.batch_size, max_length=cfg.max_length)
    work = Path(out).parent / f".work-{work_key(checksum, encoder, cfg)}"
    vectors = encode_corpus(encoder, [document_text(d) for d in docs], work, shard_size, desc=f"encode {collection}")
    if cfg.normalize:
        vectors = l2_normalize(vectors)
    index = make_faiss_index(vectors, cfg.factory, cfg.train_size, threads)
    import faiss

    faiss.write_index(index, str(Path(out) / INDEX_FILE))
    (Path(out) / DOCIDS_FILE).write_text(json.dumps([d.doc_id for d in docs]))
    write_docstore(Path(out) / DOCSTORE, docs)
    params = cfg.model_dump(exclude={"type", "batch_size"})
    params.update(
        model_identity=encoder.identity, dim=encoder.dim, metric=METRIC, index_file=INDEX_FILE,
        docid_map=DOCIDS_FILE, source=source.name, encoder_normalizes=encoder.normalize,
    )
    manifest = Manifest(kind="faiss", collection=collection, doc_count=len(docs), source_checksum=checksum, params=params)
    write_manifest(out, manifest)
    for stale in Path(out).parent.glob(".work-*"):  # keep this build's shards as an embedding cache
        if stale != work:
            shutil.rmtree(stale, ignore_errors=True)
    return manifest


def work_key(checksum: str, encoder: Encoder, cfg: FaissIndexConfig) -> str:
    """Shards are reusable only for the same source, model and encoding settings."""
    settings = json.dumps({"max_length": cfg.max_length, "dtype": cfg.dtype}, sort_keys=True)
    return hashlib.sha256(f"{checksum}|{encoder.identity}|{settings}".encode()).hexdigest()[:16]


def encode_corpus(encoder: Encoder, texts: Sequence[str], work: Path, shard_size: int = SHARD_SIZE, desc: str = "encode") -> np.ndarray:
    """``(len(texts), dim)`` float32 vectors in input order, encoded in length-sorted, resumable shards.

    Order comes from ``encoder.document_lengths`` (characters by default: cheap; a tokenizer pass
    here costs as much as the tokenization the encoder does anyway, which GPU runs showed).

    ``work`` keeps ``order.npy`` and one ``shard-NNNNN.npy`` per finished shard; shards already
    there (from an interrupted run) are loaded instead of encoded.
    """
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    order = _load_or_make_order(encoder, texts, work / "order.npy")
    vectors = np.empty((len(texts), encoder.dim), dtype=np.float32)
    bar = progress(len(texts), desc)
    try:
        for number, start in enumerate(range(0, len(texts), shard_size)):
            ids = order[start : start + shard_size]
            path = work / f"shard-{number:05d}.npy"
            shard = _load_shard(path, len(ids), encoder.dim)
            if shard is None:
                shard = _encode_with_progress(encoder, [texts[i] for i in ids], bar)
                if shard.shape != (len(ids), encoder.dim):
                    raise ValueError(f"encoder returned {shard.shape}, expected {(len(ids), encoder.dim)}")
                _save_atomic(path, shard)
            else:
                bar.update(len(ids))
            vectors[ids] = shard
    finally:
        bar.close()
    return vectors


def progress_step(encoder: Encoder) -> int:
    """Documents per encoder call inside a shard: four of its batches (at least 256), so the bar moves
    every few seconds on a CPU (a 4,096-document shard took about four minutes on 2 cores) while a GPU
    still gets calls long enough to overlap tokenization with compute."""
    return max(256, 4 * int(getattr(encoder, "batch_size", 64) or 64))


def _encode_with_progress(encoder: Encoder, texts: list[str], bar) -> np.ndarray:
    step = progress_step(encoder)
    parts = []
    for start in range(0, len(texts), step):
        chunk = texts[start : start + step]
        parts.append(np.asarray(encoder.encode_documents(chunk), dtype=np.float32).reshape(len(chunk), -1))
        bar.update(len(chunk))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)


def _load_or_make_order(encoder: Encoder, texts: Sequence[str], path: Path) -> np.ndarray:
    if path.is_file():
        order = np.load(path)
        if order.shape == (len(texts),):
            return order
    lengths = np.asarray(encoder.document_lengths(list(texts)), dtype=np.int64)
    order = np.lexsort((np.arange(len(texts)), -lengths))  # longest first, ties by position
    _save_atomic(path, order)
    return order


def _load_shard(path: Path, rows: int, dim: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        shard = np.load(path)
    except (ValueError, OSError, EOFError):
        logger.warning("ignoring unreadable shard %s", path)
        return None
    return shard if shard.shape == (rows, dim) and shard.dtype == np.float32 else None


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def make_faiss_index(vectors: np.ndarray, factory: str, train_size: int = 100_000, threads: int = 2, seed: int = 0):
    """An inner-product FAISS index from ``factory``, trained on at most ``train_size`` sampled vectors."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - core dependency
        raise ImportError("FAISS is required for dense indexes: pip install faiss-cpu") from exc
    faiss.omp_set_num_threads(max(1, threads))
    dim = vectors.shape[1]
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"invalid FAISS factory string {factory!r}: {str(exc).splitlines()[-1]}") from exc
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = vectors if len(vectors) <= train_size else vectors[rng.choice(len(vectors), train_size, replace=False)]
        try:
            index.train(np.ascontiguousarray(sample))
        except RuntimeError as exc:
            raise ConfigError(f"FAISS {factory!r} could not be trained on {len(sample)} vectors: {str(exc).splitlines()[-1]}") from exc
    for start in range(0, len(vectors), 100_000):
        index.add(np.ascontiguousarray(vectors[start : start + 100_000]))
    return index
