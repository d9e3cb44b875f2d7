"""Ranking losses with per-sample weights (the curriculum's).

``scores`` is ``(groups, 1 + negatives)`` with the positive in column 0.

* ``listwise``: softmax cross-entropy over each group (the positive must win the list);
* ``pointwise``: binary cross-entropy of every pair (positive 1, negatives 0);
* ``pairwise``: RankNet-style logistic loss of the positive against each negative.

Each returns the weighted mean ``mean(w * loss)`` (MacAvaney et al. multiply the loss by the
weight; weights below 1 early act like a per-sample warm-up).
"""

from __future__ import annotations

from enum import Enum


class Loss(str, Enum):
    LISTWISE = "listwise"
    POINTWISE = "pointwise"
    PAIRWISE = "pairwise"


def ranking_loss(kind: Loss, scores, weights):
    """``weights``: ``(groups,)`` for listwise/pairwise, ``(groups, 1 + negatives)`` for pointwise."""
    import torch
    import torch.nn.functional as F

    scores = scores.float()
    if kind is Loss.LISTWISE:
        target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        per_group = F.cross_entropy(scores, target, reduction="none")
        return (per_group * weights).mean()
    if kind is Loss.PAIRWISE:
        per_group = F.softplus(scores[:, 1:] - scores[:, :1]).mean(dim=1)
        return (per_group * weights).mean()
    if kind is Loss.POINTWISE:
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        per_pair = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
        return (per_pair * weights).mean()
    raise ValueError(f"unknown loss {kind!r}")
