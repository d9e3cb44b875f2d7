"""Many pipelines in one run on the tiny fixture: shared prefixes, skipped pipelines, depth curves."""

from __future__ import annotations

import math

import pytest

from eval.experiment import Experiment, RunCoverageError, outcome_from_runs, stage_key
from pipeline.core.config import StageConfig
from pipeline.core.errors import ModelNotFoundError
from pipeline.core.stage import Stage
from pipeline.core.types import Hit, sort_hits
from pipeline.registry import parse_config, register_stage
from tests.conftest import REPO


class ReverseReranker(Stage):
    """Reverses the candidate order: a reranker whose effect on the tiny fixture is known exactly."""

    name = "reverse"
    needs_candidates = True
    calls = 0

    def transform(self, queries, candidates=None):
        type(self).calls += len(queries)
        return {q.query_id: sort_hits([h.rescored(self.name, float(i)) for i, h in enumerate(candidates[q.query_id])])
                for q in queries}


class TestStageConfig(StageConfig):
    __test__ = False
    type: str


def _missing_model(cfg, ctx):
    raise ModelNotFoundError("models/ce-minilm not found: run python -m training cross-encoder")


@pytest.fixture(scope="module")
def config():
    register_stage("test_reverse", TestStageConfig, lambda cfg, ctx: ReverseReranker())
    register_stage("test_missing_model", TestStageConfig, _missing_model)
    bm25 = {"type": "bm25", "index": "lucene", "k1": 0.9, "b": 0.4, "cutoff": 100}
    return parse_config({
        "indexes": {"lucene": {"type": "lucene", "language": "en"}},
        "pipelines": {
            "bm25": {"stages": [bm25]},
            "bm25>>rev": {"stages": [bm25, {"type": "test_reverse"}]},
            "bm25>>ce": {"stages": [bm25, {"type": "test_missing_model"}]},
            "bm25@2>>rev": {"stages": [{**bm25, "cutoff": 2}, {"type": "test_reverse"}]},
        },
    })


@pytest.fixture(scope="module")
def experiment(config, tiny_dataset, tiny_index_root):
    return Experiment(tiny_dataset, "test", config, tiny_index_root, REPO / "models", collection="tiny")


# BM25 ranks the one relevant document first for every query; q1 and q3 have 4 hits, q2 and q4 one.
# Reversing the top-d puts it at rank min(d, hits): nDCG@10 = 1 / log2(rank + 1).
def expected_reversed(depth: int) -> float:
    return (2 / math.log2(min(depth, 4) + 1) + 2) / 4


def test_shared_prefix_is_computed_once(experiment):
    outcome = experiment.run_all(["bm25", "bm25>>rev"], depths=None)
    base, rev = outcome.systems["bm25"], outcome.systems["bm25>>rev"]
    assert base.metrics["nDCG@10"] == pytest.approx(1.0)
    assert rev.metrics["nDCG@10"] == pytest.approx(expected_reversed(4))
    assert rev.reused_stages == 1 and base.reused_stages == 0
    assert rev.stage_ms_per_query["bm25"] == base.stage_ms_per_query["bm25"]  # the same cached run
    assert rev.ms_per_query == pytest.approx(sum(rev.stage_ms_per_query.values()))
    assert set(rev.per_query["nDCG@10"]) == {"q1", "q2", "q3", "q4"}
    assert rev.per_query["nDCG@10"]["q2"] == pytest.approx(1.0)
    assert rev.per_query["nDCG@10"]["q1"] == pytest.approx(1 / math.log2(5))


def test_unbuildable_pipeline_is_skipped_with_reason(experiment):
    outcome = experiment.run_all(["bm25>>ce", "bm25"], depths=None)
    assert "bm25" in outcome.systems and "bm25>>ce" not in outcome.systems
    assert "ModelNotFoundError" in outcome.skipped["bm25>>ce"]
    assert "python -m training" in outcome.skipped["bm25>>ce"]


def test_unknown_and_excluded_pipelines_are_skipped(experiment):
    outcome = experiment.run_all(["nope", "bm25"], depths=None, exclude=["bm25"])
    assert "unknown pipeline 'nope'" in outcome.skipped["nope"]
    assert "--skip" in outcome.skipped["bm25"] and not outcome.systems


def test_depth_curve_truncates_candidates(experiment):
    ReverseReranker.calls = 0
    curve = experiment.depth_curve("bm25>>rev", depths=[1, 2, 4, 50])
    assert [p.depth for p in curve] == [0, 1, 2, 4]  # 50 is deeper than any candidate list
    assert curve[0].metrics["nDCG@10"] == pytest.approx(1.0)  # first stage alone
    for point in curve[1:]:
        assert point.metrics["nDCG@10"] == pytest.approx(expected_reversed(point.depth))
        assert point.ms_per_query >= curve[0].ms_per_query
    # depths 1 and 2 run fresh (4 queries each), plus at most one untimed warm-up batch of 4;
    # depth 4 is the configured pipeline and is not recomputed (that would add 4 more)
    assert ReverseReranker.calls <= 12


def test_retrieval_only_pipeline_has_no_curve(experiment):
    assert experiment.depth_curve("bm25", depths=[1, 2]) == []


def test_stage_key_fills_defaults_and_separates_parameters():
    short = {"type": "bm25", "index": "lucene"}
    full = {"type": "bm25", "index": "lucene", "k1": 0.9, "b": 0.4, "k": 1000}
    assert stage_key([short]) == stage_key([full])
    assert stage_key([short]) != stage_key([{**short, "k1": 1.2}])
    assert stage_key([short]) != stage_key([{**short, "cutoff": 10}])


def test_outcome_from_runs_scores_judged_queries_only():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}}
    runs = {"r": {"a": [Hit("a", "d1", 2.0)], "zzz": [Hit("zzz", "d1", 1.0)]}}
    with pytest.raises(RunCoverageError, match="1 of 2 judged queries"):
        outcome_from_runs("x", "test", qrels, runs)
    outcome = outcome_from_runs("x", "test", qrels, runs, missing="zero")
    system = outcome.systems["r"]
    assert system.metrics["nDCG@10"] == pytest.approx(0.5)  # b is unretrieved: zero
    assert system.per_query["nDCG@10"] == {"a": pytest.approx(1.0), "b": 0.0}
    assert system.ms_per_query is None


def test_per_query_values_average_to_the_aggregate(experiment):
    outcome = experiment.run_all(["bm25>>rev"], depths=None)
    system = outcome.systems["bm25>>rev"]
    for measure in ("nDCG@10", "R@100", "MAP", "RR@10"):
        values = system.per_query[measure].values()
        assert sum(values) / len(values) == pytest.approx(system.metrics[measure])


def test_same_stage_with_another_cutoff_is_shared_and_truncated(experiment):
    outcome = experiment.run_all(["bm25", "bm25@2>>rev"], depths=None)
    short = outcome.systems["bm25@2>>rev"]
    assert short.reused_stages == 1  # BM25 ran once; only its cutoff differs
    assert short.stage_ms_per_query["bm25"] == outcome.systems["bm25"].stage_ms_per_query["bm25"]
    assert max(len(hits) for hits in outcome.results["bm25@2>>rev"].values()) == 2
    assert short.metrics["nDCG@10"] == pytest.approx(expected_reversed(2))


def test_stage_cache_serves_first_stages_without_building_them(config, tiny_dataset, tiny_index_root, tmp_path, monkeypatch):
    """A cache filled on one machine lets another rerank without Java or the index (the GPU report)."""
    import eval.experiment as experiment_module

    cache = tmp_path / "stages"
    first = Experiment(tiny_dataset, "test", config, tiny_index_root, REPO / "models", collection="tiny", stage_cache=cache)
    filled = first.run_all(["bm25", "bm25>>rev"], depths=[2])
    assert len(list((cache / "tiny").glob("*.json.gz"))) == 1  # one first stage, shared by both pipelines
    assert filled.provenance["from_stage_cache"] == {}

    real_build = experiment_module.build_stage

    def no_bm25(raw, ctx, where):
        if raw["type"] == "bm25":
            raise AssertionError("the first stage was built although it is cached")
        return real_build(raw, ctx, where)

    monkeypatch.setattr(experiment_module, "build_stage", no_bm25)
    second = Experiment(tiny_dataset, "test", config, tmp_path / "no-indexes", REPO / "models", collection="tiny",
                        stage_cache=cache)
    again = second.run_all(["bm25", "bm25>>rev"], depths=[2])
    for name in ("bm25", "bm25>>rev"):
        assert again.systems[name].metrics == filled.systems[name].metrics
        assert again.results[name] == filled.results[name]  # hits with their stage scores
    assert again.systems["bm25"].stage_ms_per_query["bm25"] == filled.systems["bm25"].stage_ms_per_query["bm25"]
    assert [p.metrics for p in again.curves["bm25>>rev"]] == [p.metrics for p in filled.curves["bm25>>rev"]]
    assert set(again.provenance["from_stage_cache"]) == {"bm25"}

    # another query set is another cache scope; a corrupt entry is recomputed, not trusted
    subset = Experiment(tiny_dataset, "test", config, tmp_path / "no-indexes", REPO / "models", collection="tiny",
                        stage_cache=cache, max_queries=2)
    with pytest.raises(AssertionError, match="built although"):
        subset.run_pipeline("bm25")
    for entry in (cache / "tiny").glob("*.json.gz"):
        entry.write_bytes(b"garbage")
    monkeypatch.setattr(experiment_module, "build_stage", real_build)
    rebuilt = Experiment(tiny_dataset, "test", config, tiny_index_root, REPO / "models", collection="tiny", stage_cache=cache)
    assert rebuilt.run_pipeline("bm25")[0].metrics == filled.systems["bm25"].metrics
    assert rebuilt.stage_from_cache() == {}


def test_fill_stage_cache_runs_first_stages_only(config, tiny_dataset, tiny_index_root, tmp_path):
    ReverseReranker.calls = 0
    exp = Experiment(tiny_dataset, "test", config, tiny_index_root, REPO / "models", collection="tiny",
                     stage_cache=tmp_path / "c")
    status = exp.fill_stage_cache(["bm25", "bm25>>rev", "bm25@2>>rev", "nope"])
    assert status["bm25"] == status["bm25>>rev"] == "cached" and "unknown pipeline" in status["nope"]
    assert ReverseReranker.calls == 0
    assert len(list((tmp_path / "c" / "tiny").glob("*.json.gz"))) == 1  # the cutoff is not part of the key
    with pytest.raises(ValueError, match="stage_cache"):
        Experiment(tiny_dataset, "test", config, tiny_index_root, REPO / "models", collection="tiny").fill_stage_cache(["bm25"])
