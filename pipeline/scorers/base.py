"""The two interfaces every reranker implements: a reranker is a function of texts.

* :class:`PairScorer`: one relevance score per ``(query, passage)`` (cross-encoders, the modular
  cross-encoder); higher is better.
* :class:`ListwiseScorer`: a permutation of the passages, best first (FIRST, generative listwise).

Neither ever fetches a document: :class:`~pipeline.stages.rerank.RerankStage` looks the passages up
(:class:`~pipeline.scorers.passages.Passages`) and the service's ``/rerank`` hands request texts in.
Both are batch-first (``*_batch`` over several queries, one forward pass for all); the one-query
methods are conveniences.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Sequence

from pipeline.core.types import Query


def as_query(query: Query | str) -> Query:
    return query if isinstance(query, Query) else Query("q", query)


class Scorer:
    """What both kinds share: operator notes and a per-query language report."""

    def notes(self) -> list[str]:
        """What an operator should know about how this scorer runs (e.g. a precision it could not honour)."""
        return []

    def fast_path(self) -> dict | None:
        """How this scorer's engine runs where that is a choice of the hardware (device, precision, packed
        or padded batches), for ``GET /pipelines``; None for scorers without such choices."""
        return None

    def language_choice(self, query: Query) -> dict | None:
        """How this scorer treats ``query``'s language (the modular cross-encoder), else None."""
        return None


class PairScorer(Scorer):
    """Scores passages for a query, one float each, in the order given.

    Example::

        scorer.score("what is bm25", ["BM25 is a ranking function", "Paris is in France"])  # [2.3, -9.1]
    """

    def score(self, query: Query | str, passages: Sequence[str]) -> list[float]:
        return self.score_batch([as_query(query)], [list(passages)])[0]

    @abstractmethod
    def score_batch(self, queries: Sequence[Query], passages: Sequence[Sequence[str]]) -> list[list[float]]:
        """``passages[i]``'s scores for ``queries[i]``, for every query of the batch."""


class ListwiseScorer(Scorer):
    """Orders passages for a query: positions into ``passages``, best first (a permutation).

    Example::

        scorer.rank("what is bm25", ["Paris is in France", "BM25 is a ranking function"])  # [1, 0]
    """

    def rank(self, query: Query | str, passages: Sequence[str]) -> list[int]:
        return self.rank_batch([as_query(query)], [list(passages)])[0]

    @abstractmethod
    def rank_batch(self, queries: Sequence[Query], passages: Sequence[Sequence[str]]) -> list[list[int]]:
        """A permutation of ``range(len(passages[i]))`` per query, best first."""
