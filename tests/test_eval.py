"""The eval job on the tiny fixture, with metrics known exactly."""

from __future__ import annotations

import math

import pytest

from eval.__main__ import main as eval_main
from eval.metrics import evaluate
from eval.runner import remove_self_hits, run_eval
from eval.trec import read_run, write_run
from pipeline.core.types import Hit
from pipeline.registry import parse_config
from tests.conftest import REPO, TINY_CONFIG


def test_metrics_known_exactly():
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}, "q3": {"d9": 1}}
    run = {"q1": {"d1": 3.0, "d2": 2.0}, "q2": {"d2": 3.0, "d3": 2.0}, "q3": {"d1": 1.0}}
    m = evaluate(qrels, run)
    assert m["nDCG@10"] == pytest.approx((1 + 1 / math.log2(3) + 0) / 3, abs=1e-9)
    assert m["RR@10"] == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-9)
    assert m["R@100"] == pytest.approx(2 / 3, abs=1e-9)
    assert m["MAP"] == pytest.approx((1 + 0.5) / 3, abs=1e-9)


def test_bm25_on_tiny_fixture_is_perfect(tiny_dataset, tmp_path):
    res = run_eval(tiny_dataset, "test", "bm25", parse_config(TINY_CONFIG), tmp_path / "idx", REPO / "models")
    assert res.num_queries == 4  # q5 is unjudged and not run
    assert res.metrics["nDCG@10"] == pytest.approx(1.0)
    assert res.metrics["RR@10"] == pytest.approx(1.0)


def test_self_hits_removed():
    res = remove_self_hits({"7": [Hit("7", "7", 9.0), Hit("7", "8", 1.0)]})
    assert [h.doc_id for h in res["7"]] == ["8"]


def test_run_file_round_trip(tmp_path):
    results = {"q1": [Hit("q1", "a", 2.0), Hit("q1", "b", 1.0)]}
    write_run(results, tmp_path / "r.trec", tag="t")
    assert (tmp_path / "r.trec").read_text().splitlines()[0] == "q1 Q0 a 1 2.000000 t"
    assert [h.doc_id for h in read_run(tmp_path / "r.trec")["q1"]] == ["a", "b"]


def test_cli_writes_run_and_prints_metrics(tiny_dataset, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY_CONFIG))
    rc = eval_main(["--dataset", str(tiny_dataset), "--pipeline", "bm25", "--config", str(cfg),
                    "--index-root", str(tmp_path / "idx"), "--run-file", str(tmp_path / "run.trec")])
    assert rc == 0
    assert "nDCG@10=1.0000" in capsys.readouterr().out
    assert len((tmp_path / "run.trec").read_text().splitlines()) > 4


def test_cli_unknown_split_is_a_clear_error(tiny_dataset, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY_CONFIG))
    rc = eval_main(["--dataset", str(tiny_dataset), "--split", "dev", "--config", str(cfg), "--index-root", str(tmp_path / "i")])
    assert rc == 2 and "no qrels for split 'dev'" in capsys.readouterr().err


def test_max_queries_takes_the_first_judged_queries_in_qrels_order(tiny_dataset):
    from eval.runner import judged_queries

    all_queries, all_qrels = judged_queries(tiny_dataset, "test")
    queries, qrels = judged_queries(tiny_dataset, "test", max_queries=2)
    assert [q.query_id for q in queries] == [q.query_id for q in all_queries[:2]] == list(qrels)
    assert len(all_queries) > 2
    with pytest.raises(ValueError, match="max_queries"):
        judged_queries(tiny_dataset, "test", max_queries=0)


def test_cli_max_queries_evaluates_the_subset(tiny_dataset, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY_CONFIG))
    rc = eval_main(["--dataset", str(tiny_dataset), "--pipeline", "bm25", "--config", str(cfg), "--max-queries", "2",
                    "--index-root", str(tmp_path / "idx")])
    assert rc == 0 and "(2 queries:" in capsys.readouterr().out
