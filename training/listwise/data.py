"""Ranking sets (a pipeline's ranked candidates with passage texts) and training windows.

A ranking set is a folder that the GPU machine can read without Lucene or the corpus:

* ``rankings.jsonl``: ``{"qid", "query", "hits": [[doc_id, score], ...]}`` best first;
* ``passages.jsonl``: ``{"doc_id", "text"}`` for every doc id above (truncated texts).

The teacher set holds the cross-encoder's ranking of SciFact train queries; the
candidate set of the benchmark holds BM25's top-100 of the test queries.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

RANKINGS = "rankings.jsonl"
PASSAGES = "passages.jsonl"


@dataclass(frozen=True)
class Ranked:
    """One query with its candidates, best first."""

    qid: str
    query: str
    hits: list[tuple[str, float]]


@dataclass(frozen=True)
class TrainWindow:
    """One training example: passages in prompt order and the teacher's rank of each (0 = best)."""

    query: str
    passages: list[str]
    teacher_rank: list[int]
    teacher_score: list[float] | None = None
    """The teacher's score of each passage (for the listwise distillation loss), if it has one."""

    @property
    def teacher_order(self) -> list[int]:
        """Prompt positions, best first (the target permutation)."""
        return sorted(range(len(self.teacher_rank)), key=self.teacher_rank.__getitem__)


def is_dev(qid: str, fraction: float) -> bool:
    """Deterministic dev carve-out of a train split (stable across machines)."""
    return int(hashlib.sha256(qid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def write_ranking_set(folder: Path, ranked: Iterable[Ranked], passages: dict[str, str]) -> int:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(folder / RANKINGS, "w", encoding="utf-8") as f:
        for r in ranked:
            f.write(json.dumps({"qid": r.qid, "query": r.query, "hits": [[d, s] for d, s in r.hits]}) + "\n")
            n += 1
    with open(folder / PASSAGES, "w", encoding="utf-8") as f:
        for doc_id, text in passages.items():
            f.write(json.dumps({"doc_id": doc_id, "text": text}) + "\n")
    return n


def read_rankings(folder: Path) -> list[Ranked]:
    path = Path(folder) / RANKINGS
    if not path.is_file():
        raise FileNotFoundError(f"no {RANKINGS} in {folder}: create it with `python -m training listwise rankings`")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out.append(Ranked(str(row["qid"]), row["query"], [(str(d), float(s)) for d, s in row["hits"]]))
    return out


def read_passages(folder: Path) -> dict[str, str]:
    with open(Path(folder) / PASSAGES, encoding="utf-8") as f:
        return {row["doc_id"]: row["text"] for row in map(json.loads, filter(str.strip, f))}


def promote_relevant(ranked: Ranked, relevant: Iterable[str]) -> Ranked:
    """The qrels-fallback teacher: judged-relevant docs moved to the top, order kept otherwise."""
    rel = set(relevant)
    hits = [h for h in ranked.hits if h[0] in rel] + [h for h in ranked.hits if h[0] not in rel]
    return Ranked(ranked.qid, ranked.query, [(d, float(len(hits) - i)) for i, (d, _) in enumerate(hits)])


def sample_windows(ranked: list[Ranked], passages: dict[str, str], window: int = 20, pool: int = 30,
                   per_query: int = 2, shuffle_prob: float = 0.5, seed: int = 0,
                   include_top: int = 0) -> Iterator[TrainWindow]:
    """``per_query`` windows per query: ``window`` docs drawn from the teacher's top ``pool``.

    ``include_top`` teacher-best docs are in every window (the rest is drawn at random), so each
    window holds a clear winner: with a wide pool most other draws are easy negatives, and
    the signal is not drowned in the teacher's arbitrary order of irrelevant passages.
    Prompt order is the first-stage-like order (by doc rank in the pool, i.e. the teacher
    order perturbed) or, with ``shuffle_prob``, a random shuffle, so the model cannot learn
    to trust positions. The teacher rank is each passage's place in the teacher ranking.
    """
    rng = random.Random(seed)
    for r in ranked:
        kept = [(d, s) for d, s in r.hits[:pool] if d in passages]
        top = [d for d, _ in kept]
        score = [s for _, s in kept]
        if len(top) < 2:
            continue
        m = min(window, len(top))
        fixed = list(range(min(include_top, m)))
        for _ in range(per_query):
            drawn = rng.sample(range(len(fixed), len(top)), m - len(fixed))
            chosen = sorted(fixed + drawn)  # teacher positions, best first
            shown = list(chosen)
            if rng.random() < shuffle_prob:
                rng.shuffle(shown)
            else:  # mildly perturbed teacher order, as a first stage would show it
                shown.sort(key=lambda pos: pos + rng.gauss(0.0, m / 4))
            rank_of = {pos: i for i, pos in enumerate(chosen)}
            yield TrainWindow(r.query, [passages[top[p]] for p in shown], [rank_of[p] for p in shown],
                              [score[p] for p in shown])


def served_windows(first_stage: list[Ranked], teacher: dict[str, dict[str, float]], passages: dict[str, str],
                   window: int = 20, stride: int = 10, depth: int = 100) -> Iterator[TrainWindow]:
    """The windows the ``listwise`` stage would see if it ranked like the teacher.

    Per query: the first stage's top ``depth`` (its order; passages the teacher did not score are
    left out), cut into the stage's sliding windows from the bottom up (``window_spans``); after each
    window its passages are re-sorted by teacher score, as a perfect reranker would leave them, so
    the next window holds what the served one would. Targets: the teacher's ranks and scores of the
    passages shown, so the model learns on served-style windows (hard candidates in first-stage
    order, often without a relevant passage) rather than on windows with a planted winner.
    """
    from pipeline.scorers.listwise import window_spans

    for r in first_stage:
        scores = teacher.get(r.qid, {})
        current = [d for d, _ in r.hits[:depth] if d in passages and d in scores]
        for a, b in window_spans(len(current), window, stride):
            shown = current[a:b]
            best_first = sorted(range(len(shown)), key=lambda i: -scores[shown[i]])
            rank = [0] * len(shown)
            for place, i in enumerate(best_first):
                rank[i] = place
            yield TrainWindow(r.query, [passages[d] for d in shown], rank, [scores[d] for d in shown])
            current[a:b] = [shown[i] for i in best_first]
