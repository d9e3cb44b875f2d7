"""Typed values passed between stages.

A stage consumes a batch of :class:`Query` and, for rerankers, the candidate
:class:`Hit` lists of the previous stage; it returns a :data:`Results` mapping
``query_id -> hits`` sorted by descending score. ``(hit.query_id, hit.doc_id,
hit.score)`` is exactly what ``ir_measures`` consumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping


@dataclass(frozen=True, slots=True)
class Query:
    """One query of a batch. ``lang`` is an ISO 639-1 code or None (unknown)."""

    query_id: str
    text: str
    lang: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked document for one query.

    ``stage_scores`` keeps the score every stage gave this document (keyed by the
    stage's name) so that a reranked hit still explains its first-stage score.
    """

    query_id: str
    doc_id: str
    score: float
    stage_scores: Mapping[str, float] = field(default_factory=dict)

    def rescored(self, stage: str, score: float) -> "Hit":
        """A copy of this hit with a new score, recorded under ``stage``."""
        return replace(self, score=score, stage_scores={**self.stage_scores, stage: score})


Results = dict[str, list[Hit]]
"""``query_id -> hits``, each list sorted by descending score."""


@dataclass(frozen=True, slots=True)
class Document:
    """A stored document, as returned to users."""

    doc_id: str
    title: str
    text: str


def sort_hits(hits: list[Hit]) -> list[Hit]:
    """Sort by descending score, ties broken by doc id for determinism."""
    return sorted(hits, key=lambda h: (-h.score, h.doc_id))


def to_run(results: Results) -> dict[str, dict[str, float]]:
    """Results as the nested dict that ``ir_measures`` and pytrec_eval accept."""
    return {qid: {h.doc_id: h.score for h in hits} for qid, hits in results.items()}
