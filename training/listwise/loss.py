"""FIRST's objective: a rank-weighted pairwise (RankNet) loss on first-token logits.

For every pair of passages where the teacher ranks i above j, the loss pushes the
identifier logit of i above that of j, weighted by ``1 / (rank_i + rank_j)`` (1-based
ranks) so that mistakes near the top cost more (Reddy et al., 2024, section 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_ranknet(scores: torch.Tensor, teacher_rank: torch.Tensor) -> torch.Tensor:
    """Mean weighted pairwise loss; ``scores`` and ``teacher_rank`` are ``[batch, m]`` (rank 0 = best).

    Example: with ``teacher_rank = [[0, 1]]`` scores ``[[3., 0.]]`` give a small loss and
    ``[[0., 3.]]`` a large one.
    """
    if scores.shape != teacher_rank.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and ranks {tuple(teacher_rank.shape)} differ in shape")
    scores = scores.float()
    rank = teacher_rank.to(scores.device).float()
    better = rank[:, :, None] < rank[:, None, :]  # i ranked above j
    weight = better.float() / (rank[:, :, None] + rank[:, None, :] + 2.0)
    pair_loss = F.softplus(-(scores[:, :, None] - scores[:, None, :]))  # log(1 + exp(s_j - s_i))
    return (weight * pair_loss).sum() / weight.sum().clamp(min=1e-9)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Token cross-entropy of the full permutation (``logits[:, t]`` predicts ``targets[:, t]``)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)
