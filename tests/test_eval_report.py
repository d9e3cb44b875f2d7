"""The report: markdown + JSON + PNG from outcomes, with significance marks against the baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.experiment import DatasetOutcome, DepthPoint, SystemResult
from eval.report import build_report, render_markdown, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def system(name: str, values: np.ndarray, ms: float | None) -> SystemResult:
    per_q = {m: {f"q{i}": float(v) for i, v in enumerate(values)} for m in ("nDCG@10", "R@100")}
    metrics = {m: float(values.mean()) for m in ("nDCG@10", "RR@10", "R@100", "R@1000", "MAP")}
    return SystemResult(name, metrics, per_q, ms, {"bm25": ms or 0.0} if ms else {})


@pytest.fixture(scope="module")
def outcome() -> DatasetOutcome:
    rng = np.random.default_rng(0)
    base = rng.random(60) * 0.7
    out = DatasetOutcome("scifact-like", "test", 60)
    out.systems["bm25"] = system("bm25", base, 5.0)
    out.systems["bm25>>ce"] = system("bm25>>ce", base + 0.2, 80.0)
    out.systems["dense"] = system("dense", base + rng.normal(0, 0.05, 60), 9.0)
    out.systems["bm25>>ce"].reused_stages = 1
    out.systems["dense"].degraded = ["dense"]
    out.skipped["hybrid"] = "ModelNotFoundError: models/ce not found"
    out.curves["bm25>>ce"] = [DepthPoint(0, {"nDCG@10": base.mean()}, 5.0), DepthPoint(10, {"nDCG@10": base.mean() + 0.1}, 20.0),
                              DepthPoint(100, {"nDCG@10": base.mean() + 0.2}, 80.0)]
    return out


def test_report_marks_significance_against_baseline(outcome):
    report = build_report([outcome], baseline="bm25", command="python -m eval report ...", trials=2000)
    ds = report["datasets"][0]
    comps = {(c["system"], c["measure"]): c for c in ds["comparisons"]}
    assert comps[("bm25>>ce", "nDCG@10")]["mark"] == "▲"
    assert comps[("dense", "nDCG@10")]["mark"] == ""
    assert ("bm25", "nDCG@10") not in comps  # no comparison of the baseline with itself
    lo, hi = ds["systems"]["bm25"]["ndcg10_ci95"]
    assert lo < ds["systems"]["bm25"]["metrics"]["nDCG@10"] < hi
    md = render_markdown(report)
    row = next(line for line in md.splitlines() if line.startswith("| `bm25>>ce`"))
    assert "▲" in row and "+0.2000" in row and "(1 shared)" in row
    assert "`hybrid`: ModelNotFoundError" in md
    assert "| `dense` ⚠ degraded (dense failed open)" in md
    assert "| `bm25>>ce` | 10 |" in md  # the depth table
    assert report["machine"]["cores"] >= 1


def test_report_without_baseline_has_no_marks(outcome):
    report = build_report([outcome], baseline="absent", trials=100)
    assert report["datasets"][0]["comparisons"] == [] and report["datasets"][0]["baseline"] is None


def test_write_report_files(outcome, tmp_path):
    report = build_report([outcome], trials=500)
    written = write_report(report, [outcome], tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"report.md", "report.json", "per_query/scifact-like.json",
            "plots/scifact-like-tradeoff.png", "plots/scifact-like-ndcg-ci.png"} <= names
    for png in (tmp_path / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000
    per_q = json.loads((tmp_path / "per_query" / "scifact-like.json").read_text())
    assert len(per_q["systems"]["dense"]["nDCG@10"]) == 60
    assert json.loads((tmp_path / "report.json").read_text())["datasets"][0]["skipped"] == outcome.skipped
    assert not list(tmp_path.rglob("*.tmp"))
