"""Score arithmetic shared by fusion, rerankers and the training jobs that tune them.

Pure functions of scores and hits: normalisation, weighted fusion of ranked lists, and the
per-query blend of a reranker's score with the first stage's (``interpolate: alpha``).
"""

from __future__ import annotations

from typing import Literal, Sequence

from pipeline.core.types import Hit, sort_hits

Normalization = Literal["minmax", "zscore"]


def linear_fusion(lists: Sequence[Sequence[tuple[str, float]]], weights: Sequence[float],
                  normalization: Normalization = "zscore", doc_ids=None) -> dict[str, float]:
    """Weighted sum of normalised scores of ``(doc_id, score)`` lists; a missing document counts at
    that list's lowest score. ``doc_ids`` (default: every listed document) are the ones fused."""
    if doc_ids is None:
        doc_ids = dict.fromkeys(d for hits in lists for d, _ in hits)
    fused = {doc_id: 0.0 for doc_id in doc_ids}
    for hits, weight in zip(lists, weights, strict=True):
        if not hits:
            continue
        norm = dict(zip((d for d, _ in hits), normalize_scores([s for _, s in hits], normalization), strict=True))
        floor = min(norm.values())
        for doc_id in fused:
            fused[doc_id] += weight * norm.get(doc_id, floor)
    return fused


def normalize_scores(scores: Sequence[float], method: Normalization = "minmax") -> list[float]:
    """Min-max to [0, 1] (all equal -> 1) or z-scores (all equal -> 0)."""
    if not scores:
        return []
    if method == "minmax":
        lo, hi = min(scores), max(scores)
        return [1.0] * len(scores) if hi == lo else [(s - lo) / (hi - lo) for s in scores]
    mean = sum(scores) / len(scores)
    std = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    return [0.0] * len(scores) if std == 0 else [(s - mean) / std for s in scores]


def interpolate_scores(rerank: Sequence[float], first: Sequence[float], alpha: float) -> list[float]:
    """``alpha * minmax(rerank) + (1 - alpha) * minmax(first)`` over one query's candidates (all equal -> 1).

    How a reranker's score is blended with the first stage's (``interpolate: alpha`` of the
    ``cross_encoder``, ``modular_ce`` and ``listwise`` stages); alpha 1 is the reranker alone.
    """
    return [alpha * r + (1.0 - alpha) * f
            for r, f in zip(normalize_scores(list(rerank)), normalize_scores(list(first)), strict=True)]


def interpolate_hits(reranked: Sequence[Hit], incoming: Sequence[Hit], alpha: float, key: str) -> list[Hit]:
    """``reranked`` (in ``incoming``'s order) rescored by :func:`interpolate_scores`, the blend recorded
    under ``key``; each hit keeps its raw reranker score in its stage scores."""
    mixed = interpolate_scores([h.score for h in reranked], [h.score for h in incoming], alpha)
    return [h.rescored(key, m) for h, m in zip(reranked, mixed, strict=True)]


def rerank_output(reranked: Sequence[Hit], incoming: Sequence[Hit], alpha: float | None, name: str) -> list[Hit]:
    """One query's output of a pair reranker: the ``reranked`` head (the first ``len(reranked)`` of
    ``incoming``, each with its reranker score), blended with ``alpha`` when given and sorted; then the
    candidates it did not read, in their incoming order, below every head score (so a request for more
    results than the reranker's depth still gets them, and the head is never outranked)."""
    head = list(incoming[: len(reranked)])
    out = sort_hits(interpolate_hits(reranked, head, alpha, f"{name}_interpolated") if alpha is not None and reranked
                    else list(reranked))
    rest = incoming[len(reranked):]
    if not rest:
        return out
    floor = min((h.score for h in out), default=0.0)
    return out + [h.rescored(name, floor - 1.0 - i) for i, h in enumerate(rest)]


def rescore_listwise(hits: Sequence[Hit], order: Sequence[int], alpha: float | None = None,
                     name: str = "listwise") -> list[Hit]:
    """The stage's output for one query: ``hits`` (incoming, best first) with the head reranked to ``order``.

    ``order``: the incoming positions of the top ``len(order)`` hits, best first; the rest keep their order
    below. Scores are ``len(hits) - rank`` (under ``name``). With ``alpha``, the head is re-sorted by
    :func:`~pipeline.stages.fusion.interpolate_hits` of that score and the incoming one (under
    ``{name}_interpolated``) and the tail scores -1, -2, ...: always below the head (blends lie in [0, 1]).
    """
    k, n = len(order), len(hits)
    if sorted(order) != list(range(k)):
        raise ValueError(f"order must be a permutation of the first {k} positions, got {list(order)}")
    ranked = [hits[i].rescored(name, float(n - r)) for r, i in enumerate(order)]
    tail = [h.rescored(name, float(n - r)) for r, h in enumerate(hits[k:], start=k)]
    if alpha is None or not ranked:
        return ranked + tail
    aligned: list[Hit] = list(ranked)
    for i, hit in zip(order, ranked, strict=True):
        aligned[i] = hit  # aligned[i]: the incoming hit at position i, with its listwise score
    key = f"{name}_interpolated"
    head = sort_hits(interpolate_hits(aligned, hits[:k], alpha, key))
    return head + [h.rescored(key, -1.0 - t) for t, h in enumerate(tail)]
