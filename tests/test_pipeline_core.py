"""The stage protocol and pipeline composition, with small in-memory stages."""

from __future__ import annotations

import pytest

from pipeline.core.errors import StageContractError, StageError
from pipeline.core.stage import Pipeline, Stage
from pipeline.core.testing import StageContract
from pipeline.core.types import Hit, Query, sort_hits


class FixedRetriever(Stage):
    """Returns the same ranked list of 5 docs for every query."""

    name = "fixed"

    def transform(self, queries, candidates=None):
        return {q.query_id: [Hit(q.query_id, f"d{i}", 5.0 - i, {self.name: 5.0 - i}) for i in range(5)] for q in queries}


class ReverseReranker(Stage):
    """Reverses the candidate order (a reranker that disagrees with everything)."""

    name = "reverse"
    needs_candidates = True

    def transform(self, queries, candidates=None):
        out = {}
        for q in queries:
            hits = candidates[q.query_id]
            out[q.query_id] = sort_hits([h.rescored(self.name, float(i)) for i, h in enumerate(hits)])
        return out


class BrokenReranker(ReverseReranker):
    name = "broken"

    def transform(self, queries, candidates=None):
        raise RuntimeError("model crashed")


class TestFixedRetrieverContract(StageContract):
    @pytest.fixture
    def stage(self):
        return FixedRetriever()


class TestRerankerContract(StageContract):
    @pytest.fixture
    def stage(self):
        return ReverseReranker()

    @pytest.fixture
    def candidates(self):
        return FixedRetriever()(self.queries)


Q = [Query("a", "x"), Query("b", "y")]


def test_compose_and_cutoff():
    pipe = (FixedRetriever() % 3) >> ReverseReranker()
    assert isinstance(pipe, Pipeline) and [s.name for s in pipe.stages] == ["fixed", "reverse"]
    res = pipe(Q)
    assert [h.doc_id for h in res["a"]] == ["d2", "d1", "d0"]  # top-3 kept, then reversed
    assert res["a"][0].stage_scores == {"fixed": 3.0, "reverse": 2.0}


def test_nested_pipelines_flatten():
    pipe = Pipeline([FixedRetriever() % 4]) >> (ReverseReranker() % 2)
    assert len(pipe.stages) == 2 and pipe.cutoffs == [4, 2]
    assert len(pipe(Q)["b"]) == 2


def test_reranker_without_candidates_is_a_contract_error():
    with pytest.raises(StageContractError, match="put a retriever before it"):
        ReverseReranker()(Q)


def test_stage_without_transform_fails_at_construction():
    class Forgot(Stage):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Forgot()


def test_failing_stage_raises_typed_error():
    with pytest.raises(StageError, match="model crashed"):
        (FixedRetriever() >> BrokenReranker())(Q)


def test_fail_open_keeps_first_stage_order_and_flags_degraded():
    broken = BrokenReranker()
    broken.fail_open = True
    run = (FixedRetriever() >> broken).run(Q)
    assert run.degraded == ["broken"]
    assert [h.doc_id for h in run.results["a"]] == ["d0", "d1", "d2", "d3", "d4"]
    assert set(run.timings_ms) == {"fixed", "broken"}


def test_duplicate_stage_names_rejected():
    with pytest.raises(ValueError, match="unique"):
        FixedRetriever() >> FixedRetriever()


def test_bad_cutoff_rejected():
    with pytest.raises(ValueError, match=">= 1"):
        FixedRetriever() % 0


def test_run_with_k_caps_final_list_and_retriever_depth():
    class DepthRetriever(FixedRetriever):
        depth = 5

        def with_depth(self, k):
            clone = DepthRetriever()
            clone.depth = k
            return clone

        def transform(self, queries, candidates=None):
            return {q: hits[: self.depth] for q, hits in super().transform(queries).items()}

    assert len(Pipeline([DepthRetriever()]).run(Q, k=2).results["a"]) == 2
    run = (DepthRetriever() >> ReverseReranker()).run(Q, k=2)
    assert [h.doc_id for h in run.results["a"]] == ["d4", "d3"]  # reranker saw all 5 candidates


class PhasedReranker(ReverseReranker):
    """Times two parts of its work with :func:`pipeline.core.stage.phase`, one of them twice."""

    name = "phased"

    def transform(self, queries, candidates=None):
        from pipeline.core.stage import phase

        with phase("prepare"):
            pass
        for _ in range(2):
            with phase("score"):
                out = super().transform(queries, candidates)
        return out


def test_stage_phases_are_reported_under_the_stage_name():
    run = (FixedRetriever() >> PhasedReranker()).run(Q)
    assert set(run.timings_ms) == {"fixed", "phased", "phased.prepare", "phased.score"}
    assert 0 <= run.timings_ms["phased.score"] <= run.timings_ms["phased"]


def test_phases_of_a_failed_open_stage_do_not_leak_into_the_next_run():
    class FailingPhased(PhasedReranker):
        name = "failing"
        fail_open = True

        def transform(self, queries, candidates=None):
            from pipeline.core.stage import phase

            with phase("score"):
                raise RuntimeError("model crashed")

    run = (FixedRetriever() >> FailingPhased()).run(Q)
    assert run.degraded == ["failing"] and "failing.score" in run.timings_ms
    assert set((FixedRetriever() >> ReverseReranker()).run(Q).timings_ms) == {"fixed", "reverse"}


def test_phase_outside_a_pipeline_only_runs_the_block():
    from pipeline.core.stage import phase

    ran = []
    with phase("alone"):
        ran.append(1)
    assert ran == [1]
