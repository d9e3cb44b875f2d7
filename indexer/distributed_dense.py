"""Dense (FAISS) indexing on Ray Data: encode in parallel actors (GPU workers when present), merge.

Ray Data reads the corpus, a pool of encoder actors (one per GPU, or one per
``cpus_per_encoder`` CPUs) turns ``title text`` into vectors, and
``groupby(shard).map_groups`` writes each shard's vectors, ids and document store.
The driver then puts every vector back at its document's corpus position and
builds the configured FAISS index with the same code as the single-process
builder (:func:`indexer.dense.make_faiss_index`): for ``Flat`` (exact search) the
merged index is the single-process one, up to float rounding of the encoder's
batching (the batches hold other documents, so padding lengths differ).

Example::

    with publishing(root, "scifact", "minilm") as tmp:
        build_faiss_distributed(Path("../shared/data/scifact"), tmp, FaissIndexConfig(), "scifact")
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from indexer.dense import DOCIDS_FILE, INDEX_FILE, METRIC, document_text, l2_normalize, make_faiss_index
from indexer.distributed import RayOptions, ensure_ray, shutdown_ray, unwrap_ray_error
from indexer.lucene_merge import merge_docstores
from indexer.shards import check_unique, parse_corpus_lines, shard_dir, shard_name
from pipeline.core.config import FaissIndexConfig
from pipeline.core.errors import CollectionError
from pipeline.core.types import Document
from pipeline.encoders.bi_encoders import load_encoder
from pipeline.storage.collection import corpus_path, file_checksum, iter_corpus
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import write_docstore
from pipeline.storage.index_store import Manifest, write_manifest

logger = logging.getLogger(__name__)

VECTORS_FILE = "vectors.npy"


class EncodeDocuments:
    """Ray Data actor: loads the encoder once, adds a ``vector`` column to every batch."""

    def __init__(self, cfg: FaissIndexConfig, device: str | None, threads: int):
        import torch


        if device in (None, "cpu"):
            torch.set_num_threads(max(1, threads))
        self.encoder = load_encoder(cfg.model, device, dtype=cfg.dtype, batch_size=cfg.batch_size, max_length=cfg.max_length)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        docs = [Document(str(i), str(t), str(x)) for i, t, x in zip(batch["doc_id"], batch["title"], batch["text"], strict=True)]
        vectors = np.asarray(self.encoder.encode_documents([document_text(d) for d in docs]), dtype=np.float32)
        return {**batch, "vector": vectors.reshape(len(docs), -1)}


def write_vector_shard(group: dict[str, np.ndarray], out: str) -> dict[str, np.ndarray]:
    """Ray task body: one shard's vectors, ids (``docids.json``) and document store."""
    shard = int(group["shard"][0])
    ids = [str(i) for i in group["doc_id"]]
    check_unique(ids, f"shard {shard_name(shard)}")
    folder = shard_dir(Path(out), shard)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / VECTORS_FILE, np.asarray(np.stack(list(group["vector"])), dtype=np.float32))
    (folder / DOCIDS_FILE).write_text(json.dumps(ids))
    write_docstore(folder / DOCSTORE, (Document(i, str(t), str(x)) for i, t, x in zip(ids, group["title"], group["text"], strict=True)))
    return {"shard": np.array([shard]), "doc_count": np.array([len(ids)])}


def build_faiss_distributed(
    dataset: Path, out: Path, cfg: FaissIndexConfig, collection: str, threads: int = 2,
    options: RayOptions | None = None, cpus_per_encoder: int = 2,
) -> Manifest:
    """Encode ``dataset`` on Ray, merge into one FAISS index in corpus order, write files and manifest into ``out``."""
    options = options or RayOptions()
    if options.layout != "merged":
        raise ValueError("dense indexes are published merged (layout 'shards' is for lucene)")

    source = corpus_path(dataset)
    checksum = file_checksum(source)
    order = [d.doc_id for d in iter_corpus(dataset)]  # the single-process order; validates the corpus first
    out = Path(out).resolve()
    started = ensure_ray(options)
    try:
        _encode_and_write_shards(source, out, cfg, options.num_shards, cpus_per_encoder)
    finally:
        if started:
            shutdown_ray()
    position = {doc_id: i for i, doc_id in enumerate(order)}
    folders = sorted(p for p in (out / "shards").iterdir() if p.is_dir())
    vectors: np.ndarray | None = None
    for folder in folders:
        shard = np.load(folder / VECTORS_FILE)
        rows = [position[i] for i in json.loads((folder / DOCIDS_FILE).read_text())]
        if vectors is None:
            vectors = np.empty((len(order), shard.shape[1]), dtype=np.float32)
        vectors[rows] = shard
    if vectors is None:
        raise CollectionError(f"{source}: the corpus is empty")
    if cfg.normalize:
        vectors = l2_normalize(vectors)
    import faiss

    faiss.write_index(make_faiss_index(vectors, cfg.factory, cfg.train_size, threads), str(out / INDEX_FILE))
    (out / DOCIDS_FILE).write_text(json.dumps(order))
    stored = merge_docstores([f / DOCSTORE for f in folders], out / DOCSTORE)
    if stored != len(order):
        raise CollectionError(f"merge lost documents: {len(order)} in the corpus, {stored} stored")
    shutil.rmtree(out / "shards")
    encoder = load_encoder(cfg.model, "cpu", dtype=cfg.dtype, batch_size=cfg.batch_size, max_length=cfg.max_length)
    params: dict[str, Any] = cfg.model_dump(exclude={"type", "batch_size"})
    params.update(model_identity=encoder.identity, dim=int(vectors.shape[1]), metric=METRIC, index_file=INDEX_FILE,
                  docid_map=DOCIDS_FILE, source=source.name, encoder_normalizes=encoder.normalize,
                  build="ray", num_shards=options.num_shards)
    manifest = Manifest(kind="faiss", collection=collection, doc_count=len(order), source_checksum=checksum, params=params)
    write_manifest(out, manifest)
    logger.info("%s: %d vectors from %d shards", collection, len(order), len(folders))
    return manifest


def _encode_and_write_shards(source: Path, out: Path, cfg: FaissIndexConfig, num_shards: int, cpus_per_encoder: int) -> None:
    import ray
    import ray.data

    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if gpus:
        pool: dict[str, Any] = {"concurrency": gpus, "num_gpus": 1, "fn_constructor_kwargs": {"cfg": cfg, "device": "cuda", "threads": 1}}
    else:
        # leave one CPU to the read, parse and shuffle tasks, or the actor pool can starve them
        per = max(1, min(cpus_per_encoder, cpus - 1))
        pool = {"concurrency": max(1, (cpus - 1) // per), "num_cpus": per,
                "fn_constructor_kwargs": {"cfg": cfg, "device": "cpu", "threads": max(per, min(cpus_per_encoder, cpus))}}

    def parse(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return parse_corpus_lines(list(batch["text"]), num_shards)

    ds = ray.data.read_text(str(source)).map_batches(parse, batch_format="numpy")
    ds = ds.map_batches(EncodeDocuments, batch_format="numpy", batch_size=max(256, cfg.batch_size), **pool)
    written = ds.groupby("shard", num_partitions=num_shards).map_groups(
        write_vector_shard, batch_format="numpy", fn_kwargs={"out": str(out)}
    )
    try:
        written.take_all()
    except Exception as exc:  # Ray wraps errors raised in tasks; surface ours typed
        raise unwrap_ray_error(exc) from exc
