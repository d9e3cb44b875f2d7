"""Tuning the cross-encoder/first-stage blend on dev queries (training/cross_encoder/interpolation.py)."""

from __future__ import annotations

import pytest

from training.cross_encoder.data.mining import write_json
from training.cross_encoder.interpolation import first_stages, load_sets, table, tune

DOCS = {f"d{i}": f"doc {i}" for i in range(6)}


def query(qid: str, role: str, relevant: str, dense: bool = True) -> dict:
    bm25 = [[f"d{i}", 10.0 - i] for i in range(6)]  # BM25 order d0..d5
    return {"qid": qid, "text": f"query {qid}", "role": role, "qrels": {relevant: 1}, "bm25": bm25,
            "dense": [[f"d{5 - i}", 1.0 - i / 10] for i in range(6)] if dense else []}


class Scorer:
    """Stand-in reranker: likes d3 best, otherwise BM25's order reversed (dev has d3 relevant: it helps there)."""

    def score_pairs(self, pairs):
        return [10.0 if d == "doc 3" else float(d.split()[1]) for _, d in pairs]


@pytest.fixture
def bundles(tmp_path):
    sci = tmp_path / "sci"
    sci.mkdir()
    write_json(sci / "train.json.gz", {"meta": {"dataset": "sci"}, "docs": DOCS,
                                       "queries": [query("t1", "train", "d3"), query("v1", "dev", "d3"),
                                                   query("v2", "dev", "d0")]})
    write_json(sci / "eval-test.json.gz", {"meta": {"dataset": "sci"}, "docs": DOCS, "queries": [query("x1", "test", "d0")]})
    unseen = tmp_path / "other"
    unseen.mkdir()
    write_json(unseen / "eval-test.json.gz", {"meta": {"dataset": "other"}, "docs": DOCS,
                                              "queries": [query("u1", "test", "d1", dense=False)]})
    return [sci], [unseen / "eval-test.json.gz"]


def test_sets_hold_dev_test_and_unseen_collections(bundles):
    sets = load_sets(*bundles)
    assert [(name, role, [q.qid for q in qs]) for name, role, qs, _ in sets] == [
        ("sci", "dev", ["v1", "v2"]), ("sci", "test", ["x1"]), ("other (unseen)", "test", ["u1"])]


def test_hybrid_is_the_services_zscore_fusion_and_needs_dense_lists():
    from training.cross_encoder.data.bundle import BundleQuery

    raw = query("q", "dev", "d0")
    q = BundleQuery("q", "t", "dev", {"d0": 1}, [tuple(h) for h in raw["bm25"]], [tuple(h) for h in raw["dense"]])
    stages = first_stages(q)
    assert set(stages) == {"bm25", "hybrid"} and len(stages["hybrid"]) == 6
    assert stages["hybrid"][0][0] == "d0"  # 0.6 on BM25 (d0 first) beats 0.4 on dense (d5 first)
    assert set(first_stages(BundleQuery("q", "t", "dev", {}, q.bm25, []))) == {"bm25"}


def test_alpha_is_chosen_on_dev_and_reported_everywhere(bundles):
    report = tune(Scorer(), load_sets(*bundles))
    curves = report["curves"]
    assert set(curves) == {"sci|dev|bm25", "sci|dev|hybrid", "sci|test|bm25", "sci|test|hybrid", "other (unseen)|test|bm25"}
    dev = curves["sci|dev|bm25"]
    assert dev["0.0"] == pytest.approx(dev["first_stage"])  # alpha 0 is the first stage's order
    chosen = report["chosen"]["bm25"]["alpha"]
    assert report["chosen"]["bm25"]["dev_mean"] == pytest.approx(max(dev[str(a)] for a in report["grid"]))
    assert dev[str(chosen)] == pytest.approx(report["chosen"]["bm25"]["dev_mean"])
    assert 0.0 < chosen < 1.0  # d3 needs the reranker, d0 (relevant for v2) needs BM25: a blend wins on dev
    assert "| other (unseen) | test | bm25 |" in table(report)


def test_a_held_out_domain_pulls_alpha_towards_the_first_stage(bundles):
    from training.cross_encoder.interpolation import GRID, with_heldout_domain

    report = tune(Scorer(), load_sets(*bundles))
    # another reranker on a domain it never saw: every step towards the reranker costs nDCG
    heldout = {"curves": {"other|dev|bm25": {str(a): 0.9 - 0.5 * a for a in GRID}}}
    combined = with_heldout_domain(report, heldout)
    assert combined["chosen_in_domain"] == report["chosen"]
    assert combined["chosen"]["bm25"]["alpha"] < report["chosen"]["bm25"]["alpha"]
    mean = combined["chosen"]["bm25"]["dev_mean_curve"]
    assert mean["0.5"] == pytest.approx((report["chosen"]["bm25"]["dev_mean_curve"]["0.5"] + 0.65) / 2)
    assert combined["chosen"]["hybrid"] == report["chosen"]["hybrid"]  # no held-out hybrid curve: unchanged
