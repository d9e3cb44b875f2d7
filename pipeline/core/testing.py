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


class RerankContract(StageContract):
    """What every reranker (a :class:`~pipeline.stages.rerank.RerankStage`) must do besides the stage contract:
    its output order is its scorer's order of the same texts, so ``/rerank`` (which calls the scorer)
    and ``/search`` (which runs the stage) agree. Subclasses provide ``stage`` and ``candidates``."""

    def test_stage_order_is_the_scorers_order(self, stage, candidates):
        assert stage.interpolate is None, "the contract compares the reranker alone: build the stage without interpolate"
        for q in self.queries:
            head = candidates[q.query_id][: stage.top_n]
            texts = stage.passages.texts([h.doc_id for h in head])
            passages = [texts[h.doc_id] for h in head]
            out = [h.doc_id for h in stage([q], {q.query_id: candidates[q.query_id]})[q.query_id]]
            if hasattr(stage.scorer, "rank"):
                expected = [head[i].doc_id for i in stage.scorer.rank(q, passages)]
            else:
                scores = stage.scorer.score(q, passages)
                assert len(scores) == len(head)
                expected = [d for _, d in sorted((-s, h.doc_id) for h, s in zip(head, scores, strict=True))]
            assert out[: len(expected)] == expected

    def test_scores_are_the_scorers(self, stage, candidates):
        if hasattr(stage.scorer, "rank"):
            pytest.skip("a listwise scorer orders; its scores are rank-based")
        q = self.queries[0]
        head = candidates[q.query_id][: stage.top_n]
        texts = stage.passages.texts([h.doc_id for h in head])
        scores = dict(zip([h.doc_id for h in head], stage.scorer.score(q, [texts[h.doc_id] for h in head]), strict=True))
        for hit in stage([q], {q.query_id: candidates[q.query_id]})[q.query_id]:
            assert hit.stage_scores[stage.name] == pytest.approx(scores[hit.doc_id], abs=1e-6)
