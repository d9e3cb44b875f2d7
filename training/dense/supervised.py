"""Supervised pairs from train qrels, with hard negatives mined by a dense model.

SciFact: ``qrels/train.tsv`` minus a dev slice carved off by a seeded shuffle (never the test
qrels). XQuAD-R: questions are split by article (the first field of the sentence ids); the
train articles give (question, answer sentence) pairs, the others are held out for evaluation.
Cranfield has no train split: its domain trains on ICT/BFS pairs only.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.storage.collection import iter_corpus, load_qrels, load_queries
from training.dense.examples import Example
from training.dense.retrieval_eval import EncodeFn, doc_text, search


def carve_dev(qrels: Mapping[str, Mapping[str, int]], dev_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(train query ids, dev query ids)``: a seeded, reproducible split of a train split's queries."""
    qids = sorted(qrels)
    random.Random(seed).shuffle(qids)
    n_dev = int(round(len(qids) * dev_fraction))
    return sorted(qids[n_dev:]), sorted(qids[:n_dev])


def article_of(doc_id: str) -> str:
    """XQuAD-R sentence id ``article-paragraph-sentence`` -> ``article``."""
    return doc_id.split("-", 1)[0]


def split_by_article(qrels: Mapping[str, Mapping[str, int]], train_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """``(train question ids, held-out question ids)``, split by the article of the relevant sentence."""
    article = {q: article_of(next(iter(rels))) for q, rels in qrels.items() if rels}
    articles = sorted(set(article.values()))
    random.Random(seed).shuffle(articles)
    train_articles = set(articles[: int(round(len(articles) * train_fraction))])
    train = {q for q, a in article.items() if a in train_articles}
    return train, set(article) - train


def mine_hard_negatives(encode_queries: EncodeFn, encode_documents: EncodeFn, queries: Mapping[str, str],
                        doc_ids: Sequence[str], doc_texts: Sequence[str], positives: Mapping[str, set[str]],
                        skip_top: int = 2, depth: int = 30, device: str = "cpu",
                        doc_vecs: np.ndarray | None = None) -> dict[str, list[str]]:
    """``qid -> [doc ids]`` ranked ``skip_top``..``depth`` by the model, positives removed.

    Skipping the very top lowers the chance of picking an unjudged relevant document.
    """
    qids = list(queries)
    if doc_vecs is None:
        doc_vecs = encode_documents(list(doc_texts))
    _, idx = search(encode_queries([queries[q] for q in qids]), doc_vecs, depth, device)
    out = {}
    for row, qid in enumerate(qids):
        ranked = [doc_ids[j] for j in idx[row] if doc_ids[j] not in positives.get(qid, set()) and doc_ids[j] != qid]
        out[qid] = ranked[skip_top:]
    return out


def qrels_examples(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], texts: Mapping[str, str],
                   hard_negatives: Mapping[str, list[str]] | None, rng: random.Random, n_negatives: int = 1,
                   domain: str | None = None) -> list[Example]:
    """One example per relevant (query, document) pair, each with ``n_negatives`` sampled hard negatives."""
    out = []
    for qid in sorted(qrels):
        if qid not in queries:
            continue
        pool = list((hard_negatives or {}).get(qid, []))
        for doc_id, rel in sorted(qrels[qid].items()):
            if rel < 1 or doc_id not in texts:
                continue
            negs = tuple(texts[d] for d in rng.sample(pool, min(n_negatives, len(pool)))) if hard_negatives else ()
            if hard_negatives and len(negs) < n_negatives:
                continue
            out.append(Example(queries[qid], texts[doc_id], negs, group=qid, domain=domain, meta={"task": "qrels"}))
    return out


def load_supervised(dataset: Path, split: str, query_ids: set[str] | None = None
                    ) -> tuple[dict[str, str], dict[str, dict[str, int]], dict[str, str]]:
    """``(queries, qrels, doc texts)`` of a BEIR folder's ``split`` (optionally only ``query_ids``)."""
    qrels = load_qrels(dataset, split)
    if query_ids is not None:
        qrels = {q: r for q, r in qrels.items() if q in query_ids}
    queries = {q: v.text for q, v in load_queries(dataset).items() if q in qrels}
    texts = {d.doc_id: doc_text(d) for d in iter_corpus(dataset)}
    return queries, qrels, texts
