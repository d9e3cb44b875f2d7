"""A reusable contract test that every stage's tests subclass (after PyTerrier's TransformerTestCase).

Usage in a test module::

    class TestBM25Contract(StageContract):
        @pytest.fixture
        def stage(self, tiny_index):
            return BM25.from_index(tiny_index)
"""

from __future__ import annotations

import pytest

from pipeline.core.stage import Stage
from pipeline.core.types import Hit, Query, Results


class StageContract:
    """Behaviour every stage must have; subclasses provide the ``stage`` fixture."""

    queries = [Query("q1", "how do plants make glucose from sunlight"), Query("q2", "why does lava come out of a volcano")]

    @pytest.fixture
    def candidates(self) -> Results | None:
        """Rerankers override this with first-stage candidates."""
        return None

    def test_returns_every_query(self, stage: Stage, candidates):
        results = stage(self.queries, candidates)
        assert set(results) == {q.query_id for q in self.queries}

    def test_hits_sorted_and_typed(self, stage: Stage, candidates):
        for qid, hits in stage(self.queries, candidates).items():
            assert all(isinstance(h, Hit) and h.query_id == qid for h in hits)
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            assert len({h.doc_id for h in hits}) == len(hits), "a document appears twice"

    def test_records_its_score(self, stage: Stage, candidates):
        for hits in stage(self.queries, candidates).values():
            assert all(stage.name in h.stage_scores for h in hits)

    def test_empty_batch(self, stage: Stage, candidates):
        assert stage([], {} if candidates is not None else None) == {}

    def test_batch_equals_single(self, stage: Stage, candidates):
        batch = stage(self.queries, candidates)
        for q in self.queries:
            single = stage([q], {q.query_id: candidates[q.query_id]} if candidates else None)
            assert [h.doc_id for h in single[q.query_id]] == [h.doc_id for h in batch[q.query_id]]

    def test_deterministic(self, stage: Stage, candidates):
        a, b = stage(self.queries, candidates), stage(self.queries, candidates)
        assert {q: [h.doc_id for h in hs] for q, hs in a.items()} == {q: [h.doc_id for h in hs] for q, hs in b.items()}
