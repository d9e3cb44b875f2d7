"""Pipelines in child processes: a pipeline that kills its process is skipped, the others are reported."""

from __future__ import annotations

import os
import signal

import pytest

from eval.isolation import first_stage_groups, run_isolated
from pipeline.core.config import StageConfig
from pipeline.core.stage import Stage
from pipeline.registry import parse_config, register_stage
from tests.conftest import REPO

PRELOAD = "tests.test_eval_isolation:register_test_stages"
BM25 = {"type": "bm25", "index": "lucene", "k1": 0.9, "b": 0.4, "cutoff": 100}


class SegfaultingReranker(Stage):
    """Dies like a native kernel crash (SIGSEGV): no Python exception to catch."""

    name = "segv"
    needs_candidates = True

    def transform(self, queries, candidates=None):
        os.kill(os.getpid(), signal.SIGSEGV)


class _Config(StageConfig):
    type: str


def register_test_stages() -> None:
    register_stage("test_segfault", _Config, lambda cfg, ctx: SegfaultingReranker())


@pytest.fixture(scope="module")
def config():
    register_test_stages()
    return parse_config({
        "indexes": {"lucene": {"type": "lucene", "language": "en"}},
        "pipelines": {
            "bm25": {"stages": [BM25]},
            "bm25>>segv": {"stages": [{**BM25, "cutoff": 10}, {"type": "test_segfault"}]},
            "bm25-k1.2": {"stages": [{**BM25, "k1": 1.2}]},
        },
    })


def test_groups_follow_the_first_stage_cutoff_aside(config):
    assert first_stage_groups(config, ["bm25", "bm25-k1.2", "bm25>>segv", "nope"]) == [
        ["bm25", "bm25>>segv"], ["bm25-k1.2"], ["nope"]]


def test_a_crashing_pipeline_is_skipped_and_its_group_still_reported(config, tiny_dataset, tiny_index_root):
    outcome = run_isolated(tiny_dataset, "test", config, tiny_index_root, REPO / "models",
                           ["bm25>>segv", "bm25"], depths=None, preload=[PRELOAD])
    # the JVM's handler turns the SIGSEGV into an abort, as with the real fbgemm crash
    assert set(outcome.skipped) == {"bm25>>segv"}
    reason = outcome.skipped["bm25>>segv"]
    assert reason.startswith(("crashed: killed by signal SIGSEGV", "crashed: killed by signal SIGABRT"))
    if "SIGABRT" in reason:  # the JVM's report went to the child's temp dir (not the repo) and was read
        assert "JVM crash report: C  [libc" in reason or "JVM crash report: C [libc" in reason
    assert list(outcome.systems) == ["bm25"]
    assert outcome.systems["bm25"].metrics["nDCG@10"] == pytest.approx(1.0)
    assert set(outcome.results["bm25"]) == {"q1", "q2", "q3", "q4"}  # results travel back from the child
    assert set(outcome.provenance["pipelines"]) == {"bm25"}


def test_excluded_and_python_errors_are_reported(config, tiny_dataset, tiny_index_root):
    outcome = run_isolated(tiny_dataset, "test", config, tiny_index_root, REPO / "models",
                           ["bm25", "bm25-k1.2"], depths=None, exclude=["bm25"], preload=["tests.nowhere:nothing"])
    assert "--skip" in outcome.skipped["bm25"]
    assert outcome.skipped["bm25-k1.2"].startswith("crashed: ModuleNotFoundError")
