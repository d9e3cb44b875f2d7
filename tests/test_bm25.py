"""BM25 over a real Lucene index of the tiny collection."""

from __future__ import annotations

import pytest

from pipeline.core.testing import StageContract
from pipeline.core.types import Query
from pipeline.stages.bm25 import BM25


class TestBM25Contract(StageContract):
    @pytest.fixture
    def stage(self, tiny_index):
        return BM25.from_index(tiny_index, k=10)


def test_finds_the_obvious_document(tiny_index):
    res = BM25.from_index(tiny_index, k=5)([Query("q", "volcano magma lava")])
    assert res["q"][0].doc_id == "d2"


def test_k1_b_change_scores(tiny_index):
    q = [Query("q", "ocean tides moon")]
    a = BM25.from_index(tiny_index, k1=0.9, b=0.4)(q)["q"][0].score
    b = BM25.from_index(tiny_index, k1=2.0, b=1.0)(q)["q"][0].score
    assert a != pytest.approx(b)


def test_no_match_gives_empty_list(tiny_index):
    assert BM25.from_index(tiny_index)([Query("q", "zzzqqq")])["q"] == []
