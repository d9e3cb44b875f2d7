"""Exact dense retrieval and nDCG@10 / R@100 for training jobs (no index, no Java: runs on the GPU box).

Numbers follow trec_eval (what ``ir_measures`` computes): nDCG uses the graded relevance as
gain and log2 discounts, recall counts relevance >= 1; a judged query with no results scores 0.
As in ``eval.runner``, a document whose id equals the query id is dropped (BEIR convention).
``tests/test_dense_training.py`` checks both measures against ``ir_measures``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from ir_measures import nDCG

from eval.metrics import per_query
from pipeline.core.types import Document
from pipeline.scorers.passages import passage_text
from pipeline.storage.collection import iter_corpus, load_qrels, load_queries

Run = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]
EncodeFn = Callable[[list[str]], np.ndarray]


@dataclass
class EvalSet:
    """Judged queries over a corpus: what one column of the results table is computed on."""

    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    doc_ids: list[str]
    doc_texts: list[str]


def doc_text(doc: Document) -> str:
    """Title and text, as the dense indexer embeds a document (:func:`~pipeline.scorers.passages.passage_text`)."""
    return passage_text(doc)


def load_eval_set(dataset: Path, split: str, name: str | None = None, only_queries: set[str] | None = None) -> EvalSet:
    """Judged queries of ``split`` (optionally a subset) and the whole corpus of a BEIR folder."""
    qrels = load_qrels(dataset, split)
    if only_queries is not None:
        qrels = {q: r for q, r in qrels.items() if q in only_queries}
    queries = load_queries(dataset)
    docs = list(iter_corpus(dataset))
    return EvalSet(name or f"{Path(dataset).name}/{split}", {q: queries[q].text for q in qrels if q in queries},
                   qrels, [d.doc_id for d in docs], [doc_text(d) for d in docs])


def search(query_vecs: np.ndarray, doc_vecs: np.ndarray, k: int, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products per query: ``(scores, indices)``, best first (torch on ``device``)."""
    import torch

    k = min(k, doc_vecs.shape[0])
    if len(query_vecs) == 0 or k == 0:
        return np.zeros((len(query_vecs), 0), dtype=np.float32), np.zeros((len(query_vecs), 0), dtype=np.int64)
    docs = torch.from_numpy(np.ascontiguousarray(doc_vecs, dtype=np.float32)).to(device)
    scores, indices = [], []
    for i in range(0, len(query_vecs), 1024):
        q = torch.from_numpy(np.ascontiguousarray(query_vecs[i : i + 1024], dtype=np.float32)).to(device)
        s, idx = torch.topk(q @ docs.T, k, dim=1)
        scores.append(s.cpu().numpy())
        indices.append(idx.cpu().numpy())
    return np.concatenate(scores), np.concatenate(indices)


def retrieve(encode_queries: EncodeFn, encode_documents: EncodeFn, eval_set: EvalSet, k: int = 100,
             device: str = "cpu", doc_vecs: np.ndarray | None = None) -> Run:
    """Encode and search every judged query; self hits removed, ``k`` documents each."""
    qids = list(eval_set.queries)
    if doc_vecs is None:
        doc_vecs = encode_documents(eval_set.doc_texts)
    query_vecs = encode_queries([eval_set.queries[q] for q in qids])
    scores, indices = search(query_vecs, doc_vecs, k + 1, device)
    run: Run = {}
    for row, qid in enumerate(qids):
        hits = [(eval_set.doc_ids[j], float(s)) for j, s in zip(indices[row], scores[row], strict=True) if eval_set.doc_ids[j] != qid]
        run[qid] = dict(hits[:k])
    return run


def _ranked(docs: Mapping[str, float]) -> list[str]:
    return [d for d, _ in sorted(docs.items(), key=lambda x: (-x[1], x[0]))]


def ndcg_at(qrels: Qrels, run: Run, k: int = 10) -> float:
    """Mean nDCG@k over every query of ``qrels`` (by ir-measures; an unretrieved query scores 0)."""
    if not qrels:
        return 0.0
    values = per_query(qrels, {q: dict(run.get(q, {})) for q in qrels}, [nDCG @ k])[f"nDCG@{k}"]
    return sum(values.values()) / len(qrels)


def recall_at(qrels: Qrels, run: Run, k: int = 100) -> float:
    total = 0.0
    for qid, rels in qrels.items():
        relevant = {d for d, r in rels.items() if r >= 1}
        if relevant:
            total += len(relevant.intersection(_ranked(run.get(qid, {}))[:k])) / len(relevant)
    return total / max(len(qrels), 1)


def measures(qrels: Qrels, run: Run) -> dict[str, float]:
    return {"nDCG@10": ndcg_at(qrels, run, 10), "R@100": recall_at(qrels, run, 100)}


def write_trec(run: Run, path: Path, tag: str) -> None:
    """A TREC run file (``qid Q0 doc rank score tag``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for qid in sorted(run):
            for rank, doc in enumerate(_ranked(run[qid]), 1):
                f.write(f"{qid} Q0 {doc} {rank} {run[qid][doc]:.6f} {tag}\n")


def evaluate_sets(encode_queries: EncodeFn, encode_documents: EncodeFn, sets: Sequence[EvalSet], device: str = "cpu",
                  runs_dir: Path | None = None, tag: str = "dense") -> dict[str, dict[str, float]]:
    """``{eval set name: {"nDCG@10": .., "R@100": ..}}``; run files under ``runs_dir`` when given."""
    out = {}
    for es in sets:
        run = retrieve(encode_queries, encode_documents, es, 100, device)
        out[es.name] = measures(es.qrels, run)
        if runs_dir is not None:
            write_trec(run, Path(runs_dir) / f"{es.name.replace('/', '__')}.trec", tag)
    return out
