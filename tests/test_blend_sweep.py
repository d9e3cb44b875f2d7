"""eval.blend_sweep: the replayed blend equals the stage's own, and the choice reads dev only."""

from __future__ import annotations

import json

import pytest

from eval.blend_sweep import head_of, main, replay
from pipeline.core.score_fusion import rerank_output
from pipeline.core.types import Hit


def _stage_output(alpha):
    """One query through a fusion-like first stage then a reranker named 'ce' (depth 3 of 4 candidates)."""
    incoming = [Hit("q", d, s, {"fusion": s}) for d, s in (("a", 0.9), ("b", 0.5), ("c", 0.4), ("d", 0.1))]
    reranked = [h.rescored("ce", r) for h, r in zip(incoming[:3], (-2.0, 3.0, 1.0), strict=False)]
    return rerank_output(reranked, incoming, alpha, "ce")


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.6, 1.0])
def test_replay_reproduces_the_stage_scores(alpha):
    out = _stage_output(alpha)
    head = head_of(out, "ce")
    assert [r[0] for r in head] == ["a", "b", "c"]          # incoming order; 'd' was not reranked
    assert head[0] == ["a", 0.9, -2.0]
    replayed = replay(head, alpha, "ce")
    assert replayed == pytest.approx({h.doc_id: h.score for h in out if h.doc_id != "d"})


def test_without_a_blend_every_reranked_hit_counts():
    incoming = [Hit("q", d, s, {"fusion": s}) for d, s in (("a", 0.9), ("b", 0.5))]
    out = rerank_output([h.rescored("ce", r) for h, r in zip(incoming, (1.0, 2.0), strict=True)], incoming, None, "ce")
    head = head_of(out, "ce")
    assert head == [["a", 0.9, 1.0], ["b", 0.5, 2.0]]
    assert replay(head, None, "ce") == {"a": 1.0, "b": 2.0}


def test_head_of_skips_hits_the_reranker_never_scored():
    assert head_of([Hit("q", "x", 1.0, {"ce": 1.0})], "ce") == []   # no incoming score recorded before it
    assert head_of([Hit("q", "x", 1.0, {"fusion": 1.0})], "ce") == []


def _file(path, split, heads, qrels):
    path.write_text(json.dumps({"dataset": "toy", "split": split, "heads": heads, "qrels": qrels, "served_ndcg10": None}))
    return path


def test_choose_picks_the_dev_best_alpha_and_reports_heldout(tmp_path, capsys):
    # dev: the first stage is wrong and the reranker right -> any alpha that lets the reranker win beats 0
    heads = {"q1": [["x", 1.0, 0.0], ["y", 0.0, 5.0]], "q2": [["u", 1.0, 0.0], ["v", 0.0, 5.0]]}
    qrels = {"q1": {"y": 1}, "q2": {"v": 1}}
    dev = _file(tmp_path / "dev.json", "dev", heads, qrels)
    held = _file(tmp_path / "held.json", "heldout", heads, qrels)
    out = tmp_path / "choice.json"
    assert main(["choose", "--dev", str(dev), "--apply", str(held), "--configured", "0.4", "--json-out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dev_curve"]["0.0"] < report["dev_curve"]["1.0"] == 1.0
    assert report["chosen"] == 0.5                          # the smallest alpha at the best dev value
    assert report["applied"]["toy|heldout"]["chosen"] == 1.0
    assert report["applied"]["toy|heldout"]["first_stage"] < 1.0


def test_choose_keeps_the_configured_alpha_on_a_tie(tmp_path):
    heads = {"q1": [["x", 1.0, 5.0], ["y", 0.0, 0.0]]}
    dev = _file(tmp_path / "dev.json", "dev", heads, {"q1": {"x": 1}})
    out = tmp_path / "c.json"
    assert main(["choose", "--dev", str(dev), "--configured", "0.6", "--json-out", str(out)]) == 0
    assert json.loads(out.read_text())["chosen"] == 0.6


def test_run_rejects_a_stage_name_no_hit_carries(tiny_index_root, tmp_path, capsys):
    from tests.conftest import TINY

    code = main(["run", "--dataset", str(TINY), "--split", "test", "--pipeline", "bm25", "--stage", "ce",
                 "--out", str(tmp_path / "x.json"), "--index-root", str(tiny_index_root)])
    assert code == 2 and "carries a 'ce' score" in capsys.readouterr().err


def test_choose_refuses_an_alpha_outside_0_1_and_a_corrupt_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["choose", "--dev", str(tmp_path / "x.json"), "--configured", "1.5"])
    assert exc.value.code == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["choose", "--dev", str(bad), "--configured", "0.5"]) == 2
    assert "error:" in capsys.readouterr().err
