"""The eval subcommands end to end on the tiny fixture: report, score (run files), convert."""

from __future__ import annotations

import json

import pytest
import yaml

from eval.__main__ import main as eval_main
from eval.formats import write_trec_qrels
from eval.trec import read_run, write_run
from pipeline.core.types import Hit
from pipeline.storage.collection import load_qrels
from tests.conftest import TINY_CONFIG


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    return path


def test_report_command_writes_everything(tiny_dataset, tiny_index_root, cfg, tmp_path, capsys):
    out = tmp_path / "reports"
    rc = eval_main(["report", "--datasets", str(tiny_dataset), "--out", str(out), "--config", str(cfg),
                    "--index-root", str(tiny_index_root), "--pipelines", "bm25", "--trials", "200"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "tiny\ttest\tbm25\tnDCG@10=1.0000" in printed
    report = json.loads((out / "report.json").read_text())
    ds = report["datasets"][0]
    assert ds["systems"]["bm25"]["metrics"]["nDCG@10"] == pytest.approx(1.0)
    assert ds["systems"]["bm25"]["ms_per_query"] > 0
    assert "python -m eval report --datasets" in report["command"]
    assert len(ds["provenance"]["qrels_sha256"]) == 64
    assert ds["provenance"]["pipelines"]["bm25"]["stages"][0]["type"] == "bm25"
    assert (out / "plots" / "tiny-tradeoff.png").is_file()
    assert set(read_run(out / "runs" / "tiny" / "bm25.trec")) == {"q1", "q2", "q3", "q4"}
    md = (out / "report.md").read_text()
    assert "## tiny (test, 4 queries)" in md and "| W/T/L | retrieves | ms/query |" in md


def test_report_refuses_an_unknown_pipeline_before_running_any(tiny_dataset, cfg, tmp_path, capsys):
    rc = eval_main(["report", "--datasets", str(tiny_dataset), "--out", str(tmp_path / "r"), "--config", str(cfg),
                    "--pipelines", "bm25", "nope"])
    assert rc == 2 and "unknown pipeline 'nope'" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_score_run_files_with_significance(tiny_dataset, tmp_path, capsys):
    qrels = load_qrels(tiny_dataset, "test")
    good = {q: [Hit(q, d, 2.0) for d in docs] + [Hit(q, "d12", 1.0)] for q, docs in qrels.items()}
    bad = {q: [Hit(q, "d12", 2.0)] + [Hit(q, d, 1.0) for d in docs] for q, docs in qrels.items()}
    write_run(good, tmp_path / "good.trec", tag="good")
    write_run(bad, tmp_path / "bad.trec", tag="bad")
    write_trec_qrels(qrels, tmp_path / "qrels.txt")
    for source in (str(tiny_dataset), str(tmp_path / "qrels.txt")):
        rc = eval_main(["score", "--qrels", source, "--run", str(tmp_path / "good.trec"),
                        "--run", f"worse={tmp_path / 'bad.trec'}", "--out", str(tmp_path / "rep")])
        assert rc == 0
        lines = capsys.readouterr().out.splitlines()
        assert any(line.split("\t")[1] == "good" and "nDCG@10=1.0000" in line for line in lines)
        worse = next(line for line in lines if line.split("\t")[1] == "worse")
        assert "vs good: Δ=-0.3691" in worse  # relevant at rank 2: 1/log2(3) - 1
    assert (tmp_path / "rep" / "report.md").is_file()


def test_score_bad_run_file_is_a_clear_error(tiny_dataset, tmp_path, capsys):
    (tmp_path / "r.trec").write_text("q1 Q0 d1 1\n")
    assert eval_main(["score", "--qrels", str(tiny_dataset), "--run", str(tmp_path / "r.trec")]) == 2
    assert "r.trec:1: expected 6 columns" in capsys.readouterr().err


def test_convert_then_evaluate(tiny_dataset, tmp_path, cfg, capsys):
    from pipeline.storage.collection import iter_corpus, load_queries

    (tmp_path / "collection.tsv").write_text("".join(f"{d.doc_id}\t{d.title}\t{d.text}\n" for d in iter_corpus(tiny_dataset)))
    topics = "".join(f"<top>\n<num> Number: {q.query_id}\n<title> {q.text}\n</top>\n" for q in load_queries(tiny_dataset).values())
    (tmp_path / "topics.txt").write_text(topics)
    write_trec_qrels(load_qrels(tiny_dataset, "test"), tmp_path / "qrels.txt")
    beir = tmp_path / "tiny-trec"
    assert eval_main(["convert", "--collection", str(tmp_path / "collection.tsv"), "--topics", str(tmp_path / "topics.txt"),
                      "--qrels", str(tmp_path / "qrels.txt"), "--out", str(beir)]) == 0
    rc = eval_main(["--dataset", str(beir), "--pipeline", "bm25", "--config", str(cfg), "--index-root", str(tmp_path / "idx")])
    assert rc == 0 and "tiny-trec\ttest\tbm25\tnDCG@10=1.0000" in capsys.readouterr().out


def test_report_on_a_missing_dataset_is_a_clear_error(tmp_path, cfg, capsys):
    rc = eval_main(["report", "--datasets", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), "--config", str(cfg)])
    assert rc == 2 and "no qrels for split 'test'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _partial_runs(tiny_dataset, tmp_path):
    """A run covering every judged query and one missing half of them (both rank the relevant first)."""
    qrels = load_qrels(tiny_dataset, "test")
    full = {q: [Hit(q, d, 2.0) for d in docs] for q, docs in qrels.items()}
    half = dict(sorted(full.items())[: len(full) // 2])
    write_run(full, tmp_path / "full.trec", tag="full")
    write_run(half, tmp_path / "half.trec", tag="half")
    return len(qrels), len(full) - len(half)


def test_score_refuses_a_run_missing_judged_queries(tiny_dataset, tmp_path, capsys):
    judged, absent = _partial_runs(tiny_dataset, tmp_path)
    rc = eval_main(["score", "--qrels", str(tiny_dataset), "--run", str(tmp_path / "full.trec"), "--run", str(tmp_path / "half.trec")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"run 'half' has no results for {absent} of {judged} judged queries" in err and "--missing covered" in err


def test_score_covered_scores_the_common_queries_with_a_warning(tiny_dataset, tmp_path, capsys):
    judged, absent = _partial_runs(tiny_dataset, tmp_path)
    rc = eval_main(["score", "--qrels", str(tiny_dataset), "--run", str(tmp_path / "full.trec"), "--run", str(tmp_path / "half.trec"),
                    "--missing", "covered", "--trials", "100", "--out", str(tmp_path / "rep")])
    assert rc == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and f"half: {absent}" in captured.err
    half = next(line for line in captured.out.splitlines() if line.split("\t")[1] == "half")
    assert "nDCG@10=1.0000" in half and f"({judged - absent} of {judged} judged queries)" in half
    assert "**Coverage**: `half` misses" in (tmp_path / "rep" / "report.md").read_text()


def test_score_missing_zero_is_the_trec_eval_convention(tiny_dataset, tmp_path, capsys):
    judged, absent = _partial_runs(tiny_dataset, tmp_path)
    assert eval_main(["score", "--qrels", str(tiny_dataset), "--run", str(tmp_path / "half.trec"), "--missing", "zero"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"nDCG@10={(judged - absent) / judged:.4f}" in line and f"({judged} of {judged} judged queries)" in line


def test_unknown_pipeline_is_a_clear_error_with_a_suggestion(tiny_dataset, cfg, tmp_path, capsys):
    rc = eval_main(["--dataset", str(tiny_dataset), "--pipeline", "bm26", "--config", str(cfg), "--index-root", str(tmp_path / "i")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown pipeline 'bm26'; did you mean 'bm25'?" in err and "Traceback" not in err
    assert not (tmp_path / "i").exists()  # refused before any index was built


def test_wrong_split_is_refused_before_loading(tiny_dataset, cfg, tmp_path, capsys):
    for argv in (["--dataset", str(tiny_dataset)], ["report", "--datasets", str(tiny_dataset), "--out", str(tmp_path / "r")]):
        rc = eval_main([*argv, "--split", "dev", "--config", str(cfg), "--index-root", str(tmp_path / "i")])
        assert rc == 2 and "no qrels for split 'dev'" in capsys.readouterr().err
        assert not (tmp_path / "i").exists() and not (tmp_path / "r").exists()


def test_pipeline_and_pipelines_are_the_same_flag():
    from eval.__main__ import eval_parser

    parse = eval_parser().parse_args
    assert parse(["--dataset", "d", "--pipeline", "a", "--pipeline", "b"]).pipeline == ["a", "b"]
    assert parse(["--dataset", "d", "--pipelines", "a", "b"]).pipeline == ["a", "b"]


def test_plain_eval_reports_search_time_and_the_time_waited(tiny_dataset, tiny_index_root, cfg, capsys):
    rc = eval_main(["--dataset", str(tiny_dataset), "--pipelines", "bm25", "--config", str(cfg),
                    "--index-root", str(tiny_index_root), "--json"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and 0 < row["search_seconds"] <= row["seconds"]


def test_score_measures_and_win_tie_loss(tiny_dataset, tmp_path, capsys):
    qrels = load_qrels(tiny_dataset, "test")
    good = {q: [Hit(q, d, 2.0) for d in docs] + [Hit(q, "d12", 1.0)] for q, docs in qrels.items()}
    first = sorted(qrels)[0]  # worse on one query only: the relevant documents drop below d12
    mixed = {q: hits if q != first else [Hit(q, "d12", 3.0)] + hits[:-1] for q, hits in good.items()}
    write_run(good, tmp_path / "good.trec", tag="good")
    write_run(mixed, tmp_path / "mixed.trec", tag="mixed")
    rc = eval_main(["score", "--qrels", str(tiny_dataset), "--run", str(tmp_path / "good.trec"), "--run", str(tmp_path / "mixed.trec"),
                    "--measures", "P@1", "MAP", "--trials", "100"])
    lines = capsys.readouterr().out.splitlines()
    mixed_line = next(line for line in lines if line.split("\t")[1] == "mixed")
    assert rc == 0 and "\tP@1=" in mixed_line and "MAP=" in mixed_line and "RR@10" not in mixed_line
    assert f"W/T/L=0/{len(qrels) - 1}/1" in mixed_line
    assert eval_main(["score", "--qrels", str(tiny_dataset), "--run", str(tmp_path / "good.trec"), "--measures", "nDGC@10"]) == 2
    assert "unknown measure 'nDGC@10'" in capsys.readouterr().err


def test_plain_eval_measures(tiny_dataset, tiny_index_root, cfg, capsys):
    rc = eval_main(["--dataset", str(tiny_dataset), "--config", str(cfg), "--index-root", str(tiny_index_root),
                    "--measures", "nDCG@5", "P@1", "--json"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and row["nDCG@5"] == 1.0 and row["P@1"] == 1.0 and "MAP" not in row
