"""Training groups: one positive and ``negatives`` hard negatives, with first-stage difficulty.

Negatives come from the configured retrievers' candidate lists, ranks ``rank_from..rank_to``
(1-based, inclusive), judged positives excluded, sampled afresh every epoch. Each document
carries its best first-stage rank (``None`` when no retriever found it) and its min-max
normalised BM25 score, which the curriculum turns into a difficulty weight.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from training.cross_encoder.data.bundle import BundleQuery


@dataclass(frozen=True)
class Candidate:
    doc_id: str
    rank: int | None
    """Best 1-based rank over the retrievers; None when not retrieved."""
    score: float
    """BM25 score min-max normalised within the query's list (0 when not retrieved)."""


@dataclass(frozen=True)
class Group:
    qid: str
    positive: Candidate
    negatives: tuple[Candidate, ...]


def candidate_table(q: BundleQuery, retrievers: Sequence[str]) -> dict[str, Candidate]:
    """Every retrieved document of ``q`` with its best rank and normalised BM25 score."""
    lists = {"bm25": q.bm25, "dense": q.dense}
    unknown = set(retrievers) - set(lists)
    if unknown:
        raise ValueError(f"unknown retrievers {sorted(unknown)} (known: bm25, dense)")
    scores = [s for _, s in q.bm25]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    norm = {d: (s - lo) / (hi - lo) if hi > lo else 1.0 for d, s in q.bm25}
    best: dict[str, int] = {}
    for name in retrievers:
        for rank, (doc, _) in enumerate(lists[name], 1):
            best[doc] = min(best.get(doc, rank), rank)
    return {d: Candidate(d, r, norm.get(d, 0.0)) for d, r in best.items()}


def make_groups(queries: Sequence[BundleQuery], negatives: int, rank_from: int, rank_to: int,
                retrievers: Sequence[str], rng: random.Random) -> list[Group]:
    """One group per (query, positive); queries with no positive or too few negatives are skipped."""
    if not 1 <= rank_from <= rank_to:
        raise ValueError(f"rank range must satisfy 1 <= from <= to, got {rank_from}..{rank_to}")
    groups = []
    for q in queries:
        table = candidate_table(q, retrievers)
        positives = set(q.positives)
        pool = sorted(d for d, c in table.items()
                      if d not in positives and q.qrels.get(d, 0) <= 0 and rank_from <= (c.rank or 0) <= rank_to)
        if not positives or len(pool) < negatives:
            continue
        for pos in sorted(positives):
            chosen = rng.sample(pool, negatives)
            groups.append(Group(q.qid, table.get(pos, Candidate(pos, None, 0.0)), tuple(table[d] for d in chosen)))
    return groups
