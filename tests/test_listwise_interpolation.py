"""Tuning the FIRST/first-stage blend on bench runs (training/listwise/interpolation.py)."""

from __future__ import annotations

import json
import random

import pytest

from eval.trec import read_run, write_run
from pipeline.core.types import Document, Hit, Query
from pipeline.scorers.listwise import FirstListwiseScorer
from pipeline.scorers.passages import Passages
from pipeline.stages.rerank import RerankStage
from training.__main__ import main
from training.listwise.interpolation import GRID, blended_run, stage_inputs, table, tune

# One judged query, depth 3. Input a 4 > b 3.8 > c 0 (minmax 1, 0.95, 0), then x (tail); FIRST c > b > a.
# Blend: a = 1 - alpha, b = 0.5 alpha + 0.95 (1 - alpha), c = alpha: b leads for 0.1 <= alpha <= 0.65, so
# with b relevant both runs alone have nDCG@10 1/log2(3) and the blend 1.0 (ties: the larger alpha, 0.65).
INPUT = [("a", 4.0), ("b", 3.8), ("c", 0.0), ("x", -1.0)]
FIRST = [("c", 4.0), ("b", 3.0), ("a", 2.0), ("x", 1.0)]


def write_trec(path, runs: dict[str, list[tuple[str, float]]], tag: str) -> None:
    path.write_text("".join(f"{q} Q0 {d} {r} {s:.6f} {tag}\n" for q, hits in runs.items()
                            for r, (d, s) in enumerate(hits, 1)))


def bench(folder, input_run, first_run, depth: int | None = 3):
    folder.mkdir()
    write_trec(folder / "input.trec", input_run, "input")
    write_trec(folder / "first.trec", first_run, "first")
    if depth is not None:
        (folder / "listwise_bench.json").write_text(json.dumps({"depth": depth}))
    return folder


def qrels(path, rows):
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in rows))
    return path


@pytest.fixture
def splits(tmp_path):
    unjudged = {"u": [("a", 1.0), ("b", 0.5)]}  # in the runs, not in the qrels: not scored
    dev = bench(tmp_path / "dev", {"q1": INPUT, **unjudged}, {"q1": FIRST, **unjudged})
    test = bench(tmp_path / "test", {"t1": INPUT}, {"t1": FIRST})
    return (dev, qrels(tmp_path / "dev.tsv", [("q1", "b", 1), ("gone", "a", 1)]),
            test, qrels(tmp_path / "test.tsv", [("t1", "c", 1)]))


def test_blending_helps_on_dev_and_alpha_is_chosen_there(splits):
    report = tune(*splits)
    dev, test = report["dev"], report["test"]
    runs_alone = 1 / 1.5849625007211562  # relevant doc at rank 2
    assert dev["queries"] == 1 and dev["depth"] == 3
    assert dev["input"] == pytest.approx(runs_alone) == dev["curve"]["0.0"]
    assert dev["first"] == pytest.approx(runs_alone) == dev["curve"]["1.0"]
    assert [a for a in GRID if dev["curve"][str(a)] == pytest.approx(1.0)] == [round(0.1 + 0.05 * i, 2) for i in range(12)]
    assert report["chosen"]["alpha"] == 0.65 and report["chosen"]["dev_ndcg@10"] == pytest.approx(1.0)
    # test: FIRST alone is right (c relevant); at 0.65 b still edges c out -> reported, never chosen on
    assert test["first"] == pytest.approx(1.0) == test["curve"]["1.0"] and test["input"] == pytest.approx(0.5)
    assert report["chosen"]["test_ndcg@10"] == test["curve"]["0.65"] == pytest.approx(runs_alone)
    assert "| 0.65 * | 1.0000 | 0.6309 |" in table(report)


class ReversingScorer(FirstListwiseScorer):
    """The scorer's window logic; a stand-in model reverses every window (no tokenizer needed)."""

    def __init__(self):
        self.window, self.stride, self.batch_size = 4, 2, 8

    def rank_windows(self, windows):
        return [list(range(len(passages)))[::-1] for _, passages in windows]


class NoDocs:
    def get_many(self, ids) -> dict[str, Document]:
        return {}


def ReversingStage(depth: int, interpolate: float | None = None) -> RerankStage:  # noqa: N802 - reads as a class
    """The listwise stage as its builder makes it, around the reversing scorer."""
    return RerankStage(ReversingScorer(), Passages(NoDocs()), top_n=depth, interpolate=interpolate, name="listwise")


def test_the_tuner_rebuilds_exactly_what_the_stage_outputs(tmp_path):
    rng = random.Random(0)
    queries = [Query(f"q{i}", "x") for i in range(4)]
    candidates = {q.query_id: sorted((Hit(q.query_id, f"d{j}", round(rng.uniform(-5, 5), 3)) for j in range(11)),
                                     key=lambda h: -h.score) for q in queries}
    write_run(candidates, tmp_path / "input.trec", tag="input")
    write_run(ReversingStage(depth=7)(queries, candidates), tmp_path / "first.trec", tag="first")
    inputs = stage_inputs(read_run(tmp_path / "input.trec"), read_run(tmp_path / "first.trec"), depth=7)
    for alpha in (0.0, 0.3, 0.65, 1.0):
        staged = ReversingStage(depth=7, interpolate=alpha)(queries, candidates)
        rebuilt = blended_run(inputs, alpha)
        for q in queries:
            assert list(rebuilt[q.query_id]) == [h.doc_id for h in staged[q.query_id]]
            assert list(rebuilt[q.query_id].values()) == pytest.approx([h.score for h in staged[q.query_id]])


def test_cli_writes_the_report_and_prints_the_table(splits, tmp_path, capsys):
    dev, dev_qrels, test, test_qrels = splits
    out = tmp_path / "report.json"
    assert main(["listwise", "interpolate", "--dev", str(dev), "--dev-qrels", str(dev_qrels), "--test", str(test),
                 "--test-qrels", str(test_qrels), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["chosen"]["alpha"] == 0.65 and set(report["test"]["curve"]) == {str(a) for a in GRID}
    printed = capsys.readouterr().out
    assert "| FIRST alone | 0.6309 | 1.0000 |" in printed and "interpolate: 0.65" in printed
    assert main(["listwise", "interpolate", "--dev", str(dev), "--dev-qrels", str(dev_qrels)]) == 0
    assert "test" not in json.loads((dev / "interpolation.json").read_text())


@pytest.mark.parametrize("case, message", [
    ("no first.trec", "lacks first.trec"),
    ("disjoint qrels", "shares no query with the runs"),
    ("depth too small", "reranked deeper"),
    ("test without qrels", "--test and --test-qrels go together"),
])
def test_bad_inputs_exit_2_with_a_message(splits, tmp_path, capsys, case, message):
    dev, dev_qrels, test, _ = splits
    args = ["listwise", "interpolate", "--dev", str(dev), "--dev-qrels", str(dev_qrels)]
    if case == "no first.trec":
        (dev / "first.trec").unlink()
    elif case == "disjoint qrels":
        args[-1] = str(qrels(tmp_path / "other.tsv", [("zz", "a", 1)]))
    elif case == "depth too small":
        args += ["--depth", "1"]  # FIRST's ranks 2.. (b, a) are not in the input's order
    else:
        args += ["--test", str(test)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err
