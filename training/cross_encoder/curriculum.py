"""Curriculum weights after MacAvaney et al., "Training Curricula for Open Domain Answer
Re-Ranking" (SIGIR 2020).

A difficulty heuristic ``D(q, d)`` in [0, 1] (1 = easy) comes from the first stage:

* ``recip`` (reciprocal rank): a positive ranked ``r`` has ``1/r`` (easy when BM25 already put
  it on top), a negative ranked ``r`` has ``1 - 1/r`` (hard when BM25 ranked it high);
* ``score``: the same with the min-max normalised BM25 score ``s``: ``s`` for positives,
  ``1 - s`` for negatives.

An unretrieved positive counts as hardest (0). The weight of a sample at step ``i`` is
``D + (1 - D) * min(1, i / anneal_steps)``: hard samples count little at first and every
weight reaches 1 (uniform) after ``anneal_steps``. A listwise group's weight is
``w(positive) * mean(w(negatives))`` (the paper's pairwise product, averaged over the group).
"""

from __future__ import annotations

from enum import Enum

from training.cross_encoder.data.groups import Candidate, Group


class Heuristic(str, Enum):
    RECIP = "recip"
    SCORE = "score"


def difficulty(c: Candidate, positive: bool, heuristic: Heuristic = Heuristic.RECIP) -> float:
    """``D(q, d)`` in [0, 1]; 1 is easy."""
    if heuristic is Heuristic.RECIP:
        if c.rank is None:
            return 0.0 if positive else 1.0
        return 1.0 / c.rank if positive else 1.0 - 1.0 / c.rank
    if c.rank is None:
        return 0.0 if positive else 1.0
    return c.score if positive else 1.0 - c.score


def anneal(d: float, step: int, anneal_steps: int) -> float:
    """Weight at ``step``: ``d`` at step 0, linearly to 1 at ``anneal_steps`` (1 if no curriculum)."""
    if anneal_steps <= 0:
        return 1.0
    t = min(1.0, max(step, 0) / anneal_steps)
    return d + (1.0 - d) * t


def pair_weights(group: Group, step: int, anneal_steps: int, heuristic: Heuristic = Heuristic.RECIP) -> list[float]:
    """Weights of ``[positive, *negatives]`` at ``step`` (pointwise losses)."""
    pos = anneal(difficulty(group.positive, True, heuristic), step, anneal_steps)
    return [pos] + [anneal(difficulty(n, False, heuristic), step, anneal_steps) for n in group.negatives]


def group_weight(group: Group, step: int, anneal_steps: int, heuristic: Heuristic = Heuristic.RECIP) -> float:
    """Weight of the whole group at ``step`` (listwise losses)."""
    w = pair_weights(group, step, anneal_steps, heuristic)
    return w[0] * sum(w[1:]) / max(len(w) - 1, 1)
