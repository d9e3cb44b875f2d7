"""Mine first-stage candidates (BM25, and dense when asked) for every judged query of a split.

The result is a self-contained **bundle** (JSON): query texts, qrels, each query's ranked
BM25 and dense candidates with scores, and the text of every document they name. Training
and its dev/test evaluation read only bundles, so the GPU machine needs neither Java nor the
collection. Bundles hold the whole corpus (so dense lists can be added later, on a GPU, by
:func:`add_dense`). Two files are written:

* ``train.json.gz``: the train split's queries, each tagged ``train`` or ``dev`` (``dev_queries``
  queries held out with a fixed seed: early stopping and tuning never see test qrels);
* ``eval-<split>.json.gz`` for each ``--eval-split`` (e.g. test): used only to *report* a finished
  model, never to select one.

Example::

    python -m training cross-encoder mine --dataset ../shared/data/scifact --out .cache/ce/scifact
"""

from __future__ import annotations

import gzip
import json
import logging
import random
from pathlib import Path
from typing import Sequence

from pipeline.core.types import Query
from pipeline.scorers.passages import passage_text
from pipeline.storage.collection import corpus_path, dataset_name, file_checksum, iter_corpus, load_qrels, load_queries

logger = logging.getLogger(__name__)


def carve_dev(query_ids: Sequence[str], n: int, seed: int) -> set[str]:
    """``n`` query ids held out as dev, the same for the same ids and seed."""
    ids = sorted(query_ids)
    if n >= len(ids):
        raise ValueError(f"cannot hold out {n} dev queries from {len(ids)}: keep some for training")
    return set(random.Random(seed).sample(ids, n))


def bm25_candidates(dataset: Path, collection: str, queries: list[Query], depth: int, index_root: Path,
                    threads: int = 2) -> dict[str, list[tuple[str, float]]]:
    """BM25 (k1=0.9, b=0.4, title+text) top-``depth`` per query, from the published Lucene index."""
    from indexer.build import ensure_index
    from pipeline.core.config import LuceneIndexConfig
    from pipeline.registry import standalone_stage

    ensure_index(dataset, collection, "lucene", LuceneIndexConfig(), index_root)
    searcher = standalone_stage({"type": "bm25", "index": "lucene", "k": depth + 1, "threads": threads}, index_root,
                                collection, {"lucene": LuceneIndexConfig().model_dump()})
    out = {}
    for i in range(0, len(queries), 256):
        for qid, hits in searcher(queries[i : i + 256]).items():
            out[qid] = [(h.doc_id, h.score) for h in hits if h.doc_id != qid][:depth]
    return out


class DenseRanker:
    """Exact inner-product search with all-MiniLM-L6-v2 (normalised vectors); the corpus is encoded once (GPU if there)."""

    def __init__(self, docs: dict[str, str], model: Path | None = None, device: str | None = None, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        from training.cross_encoder.model import packaged_minilm

        self.model = SentenceTransformer(str(model or packaged_minilm()), device=device)
        self.ids = list(docs)
        self.batch_size = batch_size
        self.vectors = self.model.encode([docs[d] for d in self.ids], batch_size=batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True)

    def search(self, queries: list[Query], depth: int) -> dict[str, list[tuple[str, float]]]:
        import numpy as np

        query_vecs = self.model.encode([q.text for q in queries], batch_size=self.batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True)
        scores = query_vecs @ self.vectors.T
        out = {}
        for row, q in zip(scores, queries, strict=True):
            top = np.argsort(-row)[: depth + 1]
            out[q.query_id] = [(self.ids[j], float(row[j])) for j in top if self.ids[j] != q.query_id][:depth]
        return out


def mine(dataset: Path, out: Path, index_root: Path, train_split: str = "train", eval_splits: Sequence[str] = ("test",),
         dev_queries: int = 100, seed: int = 13, depth: int = 200) -> list[Path]:
    """Write ``train.json.gz`` and ``eval-<split>.json.gz`` bundles (BM25 lists) under ``out``; returns their paths."""
    dataset, out = Path(dataset), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    collection = dataset_name(dataset)
    all_docs = {d.doc_id: passage_text(d) for d in iter_corpus(dataset)}
    all_queries = load_queries(dataset)
    meta = {"dataset": collection, "corpus_sha256": file_checksum(corpus_path(dataset)), "depth": depth,
            "bm25": {"k1": 0.9, "b": 0.4, "fields": "title+text"}, "dense": None}
    written = []
    for split in [s for s in (train_split, *eval_splits) if s]:  # train_split '' = eval bundles only
        qrels = load_qrels(dataset, split)
        queries = [all_queries[q] for q in qrels if q in all_queries]
        bm25 = bm25_candidates(dataset, collection, queries, depth, index_root)
        dev = carve_dev([q.query_id for q in queries], dev_queries, seed) if split == train_split else set()
        rows = [{"qid": q.query_id, "text": q.text, "qrels": qrels[q.query_id], "bm25": bm25.get(q.query_id, []),
                 "role": "dev" if q.query_id in dev else ("train" if split == train_split else split), "dense": []}
                for q in queries]
        bundle = {"meta": {**meta, "split": split, "dev_queries": dev_queries if split == train_split else 0, "seed": seed},
                  "docs": all_docs, "queries": rows}
        path = out / ("train.json.gz" if split == train_split else f"eval-{split}.json.gz")
        write_json(path, bundle)
        logger.info("wrote %s: %d queries, %d docs", path, len(rows), len(all_docs))
        written.append(path)
    return written


def mine_xquad(root: Path, lang: str, out: Path, index_root: Path, dev_queries: int = 100, seed: int = 13,
               depth: int = 200, heldout_share: float = 1 / 3) -> Path:
    """A training bundle of XQuAD-R ``lang``: the questions of the *training* articles only.

    Articles are split as the language modules split them (:func:`question_split`, same seed), so
    the held-out articles stay unseen. Candidates are BM25 (that language's analyzer) over every
    sentence of the collection; the dataset is named ``xquad-r-<lang>``.
    """
    from training.language_modules.candidates import bm25_runs
    from training.language_modules.xquad import load_language, question_split

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_language(root, lang)
    train_ids, _ = question_split(data, heldout_share, seed)
    runs = bm25_runs(Path(root) / lang, lang, {q: data.questions[q] for q in train_ids}, index_root, depth)
    dev = carve_dev(train_ids, dev_queries, seed)
    rows = [{"qid": q, "text": data.questions[q], "qrels": {data.answer[q]: 1}, "bm25": runs.get(q, [])[:depth],
             "role": "dev" if q in dev else "train", "dense": []} for q in train_ids]
    meta = {"dataset": f"xquad-r-{lang}", "corpus_sha256": file_checksum(Path(root) / lang / "corpus.jsonl"),
            "depth": depth, "bm25": {"k1": 0.9, "b": 0.4, "analyzer": lang}, "dense": None, "split": "train-articles",
            "heldout_share": heldout_share, "dev_queries": dev_queries, "seed": seed}
    path = out / "train.json.gz"
    write_json(path, {"meta": meta, "docs": dict(data.sentences), "queries": rows})
    logger.info("wrote %s: %d questions (%d dev), %d sentences", path, len(rows), len(dev), len(data.sentences))
    return path


def add_dense(paths: Sequence[Path], model: Path | None = None, device: str | None = None, force: bool = False) -> int:
    """Add each query's dense top-``depth`` (all-MiniLM-L6-v2, exact search over the whole corpus) to bundles.

    A bundle that already has dense lists is left as it is unless ``force`` (a re-run costs nothing, so a GPU job
    can densify whatever was not densified beforehand); returns how many bundles were written.
    """
    ranker, written = None, 0
    for path in paths:
        bundle = read_json(path)
        if bundle["meta"].get("dense") and not force:
            logger.info("%s already has dense lists (%s): left as it is", path, bundle["meta"]["dense"])
            continue
        if ranker is None:
            ranker = DenseRanker(bundle["docs"], model=model, device=device)
        queries = [Query(r["qid"], r["text"]) for r in bundle["queries"]]
        lists = ranker.search(queries, bundle["meta"]["depth"])
        for row in bundle["queries"]:
            row["dense"] = lists[row["qid"]]
        bundle["meta"]["dense"] = "all-MiniLM-L6-v2, exact inner product over normalised vectors"
        write_json(path, bundle)
        written += 1
        logger.info("added dense lists to %s", path)
    return written


def write_json(path: Path, data) -> None:
    tmp = Path(path).with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(data, f)
    tmp.replace(path)


def read_json(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)
