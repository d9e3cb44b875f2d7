"""eval.rerank_tradeoff: a grid point computed from cached scores is exactly the served stage's output."""

from __future__ import annotations

import random

import pytest

from eval.rerank_tradeoff import point, seconds_at
from pipeline.core.types import Document, Hit, Query
from pipeline.scorers.base import PairScorer
from pipeline.scorers.passages import Passages
from pipeline.stages.rerank import RerankStage


class Docs(dict):
    def get_many(self, doc_ids):
        return {d: self[d] for d in doc_ids if d in self}


class TableScorer(PairScorer):
    """Scores each passage from a fixed table (its text is the doc id)."""

    def __init__(self, table: dict[str, float]):
        self.table = table

    def score_batch(self, queries, passages):
        return [[self.table[p] for p in ps] for ps in passages]


@pytest.mark.parametrize("alpha", [None, 0.0, 0.5, 1.0])
@pytest.mark.parametrize("depth", [1, 3, 7, 10])
def test_cached_point_equals_the_rerank_stage(alpha, depth):
    rng = random.Random(depth)
    docs = Docs({f"d{i}": Document(f"d{i}", "", f"d{i}") for i in range(10)})
    table = {d: rng.uniform(-5, 5) for d in docs}
    candidates = {q: sorted((Hit(q, d, rng.uniform(0, 20)) for d in docs), key=lambda h: -h.score) for q in ("q1", "q2")}
    cache = {q: {"scores": [table[h.doc_id] for h in hits], "seconds": 1.0} for q, hits in candidates.items()}
    stage = RerankStage(TableScorer(table), Passages(docs, titles=False), top_n=depth, interpolate=alpha, name="ce")
    want = stage.transform([Query("q1", "x"), Query("q2", "y")], candidates)
    got = point(candidates, cache, depth, alpha, "ce")
    assert {q: [(h.doc_id, round(h.score, 9)) for h in hits] for q, hits in got.items()} == \
           {q: [(h.doc_id, round(h.score, 9)) for h in hits] for q, hits in want.items()}


def test_seconds_are_pro_rata_of_the_pairs_read():
    cache = {"q1": {"scores": [0.0] * 100, "seconds": 4.0}, "q2": {"scores": [0.0] * 50, "seconds": 1.0}}
    assert seconds_at(cache, 100) == pytest.approx((4.0 + 1.0) / 2)
    assert seconds_at(cache, 25) == pytest.approx((1.0 + 0.5) / 2)


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_candidates_beyond_the_depth_stay_below_in_their_order(alpha):
    """A request for more results than the reranker reads still gets them, never above a reranked one."""
    docs = Docs({f"d{i}": Document(f"d{i}", "", f"d{i}") for i in range(6)})
    table = {"d0": -3.0, "d1": 4.0, "d2": 9.0, "d3": 50.0, "d4": 60.0, "d5": 70.0}
    incoming = [Hit("q", f"d{i}", 10.0 - i) for i in range(6)]
    stage = RerankStage(TableScorer(table), Passages(docs, titles=False), top_n=3, interpolate=alpha, name="ce")
    out = stage.transform([Query("q", "x")], {"q": incoming})["q"]
    assert {h.doc_id for h in out[:3]} == {"d0", "d1", "d2"} and [h.doc_id for h in out[3:]] == ["d3", "d4", "d5"]
    assert min(h.score for h in out[:3]) > out[3].score > out[4].score > out[5].score
    if alpha is None:
        assert [h.doc_id for h in out[:3]] == ["d2", "d1", "d0"]


def test_prune_settings_parse_and_bad_ones_are_usage_errors():
    import argparse

    from eval.rerank_tradeoff import _prunes

    assert _prunes("2:0.5, 1:0.35:128") == [(2, 0.5, 0), (1, 0.35, 128)]
    for bad in ("2", "2:x", "-1:0.5", "2:0", "2:1.5", "2:0.5:-3", "2:0.5:1:9"):
        with pytest.raises(argparse.ArgumentTypeError):
            _prunes(bad)
