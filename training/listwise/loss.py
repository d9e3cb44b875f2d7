"""FIRST's objectives on the first-token logits of the identifiers.

* :func:`weighted_ranknet` (the paper's): for every pair of passages where the teacher ranks i
  above j, push the identifier logit of i above that of j, weighted by ``1 / (rank_i + rank_j)``
  (1-based ranks) so that mistakes near the top cost more (Reddy et al., 2024, section 3).
* :func:`listnet` (distillation): cross-entropy between the teacher's score distribution over
  the window (softmax of its scores / T) and the model's softmax over identifier logits. Pairs
  of passages the teacher barely separates weigh almost nothing, so a 20-passage window with one
  clear winner is one clear signal rather than 190 mostly arbitrary pairs.
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


def listnet(scores: torch.Tensor, teacher_scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of ``softmax(teacher_scores / T)`` against ``log_softmax(scores)``; both ``[batch, m]``.

    Example: teacher ``[[5., 0.]]``: scores ``[[3., 0.]]`` give a smaller loss than ``[[0., 3.]]``.
    """
    if scores.shape != teacher_scores.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and teacher scores {tuple(teacher_scores.shape)} differ in shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    target = torch.softmax(teacher_scores.to(scores.device).float() / temperature, dim=-1)
    return -(target * torch.log_softmax(scores.float(), dim=-1)).sum(-1).mean()


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Token cross-entropy of the full permutation (``logits[:, t]`` predicts ``targets[:, t]``)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)
