"""The evaluation report: markdown + JSON + PNG plots, with significance against a baseline.

``build_report`` turns :class:`~eval.experiment.DatasetOutcome` objects into one
JSON-able dict (metrics, bootstrap CIs, paired tests with Holm correction, latency,
rerank-depth curves, skipped pipelines with reasons, the machine and commit);
``write_report`` writes ``report.md``, ``report.json``, ``per_query/<dataset>.json``
and ``plots/<dataset>-tradeoff.png`` / ``plots/<dataset>-ndcg-ci.png``::

    report = build_report([outcome], baseline="bm25")
    write_report(report, [outcome], Path("reports/"))
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from eval.experiment import CURVE_MEASURE, DatasetOutcome
from eval.machine import machine
from eval.stats import bootstrap_ci, compare_to_baseline

TESTED_MEASURES = ("nDCG@10", "R@100")
TABLE_MEASURES = ("nDCG@10", "R@100", "RR@10", "MAP")
ALPHA = 0.05


def build_report(
    outcomes: Sequence[DatasetOutcome], baseline: str = "bm25", command: str | None = None, trials: int = 10_000
) -> dict[str, Any]:
    """Everything the markdown, the plots and a later reader need, as plain data."""
    datasets = []
    for outcome in outcomes:
        systems = {}
        for name, system in outcome.systems.items():
            ci = bootstrap_ci(system.per_query["nDCG@10"]) if system.per_query.get("nDCG@10") else (None, None)
            systems[name] = {
                "metrics": system.metrics,
                "ndcg10_ci95": list(ci),
                "ms_per_query": system.ms_per_query,
                "stage_ms_per_query": system.stage_ms_per_query,
                "reused_stages": system.reused_stages,
                "degraded": system.degraded,
            }
        comparisons = []
        if baseline in outcome.systems and len(outcome.systems) > 1:
            for measure in TESTED_MEASURES:
                per_system = {n: s.per_query[measure] for n, s in outcome.systems.items()}
                comparisons += [c.to_dict() | {"mark": c.mark(ALPHA)} for c in compare_to_baseline(per_system, baseline, measure, trials)]
        datasets.append({
            "dataset": outcome.dataset,
            "split": outcome.split,
            "num_queries": outcome.num_queries,
            "provenance": outcome.provenance,
            "baseline": baseline if baseline in outcome.systems else None,
            "systems": systems,
            "comparisons": comparisons,
            "skipped": outcome.skipped,
            "curves": {k: [p.__dict__ for p in v] for k, v in outcome.curves.items()},
        })
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "machine": machine(),
        "alpha": ALPHA,
        "tests": "paired t-test and paired randomisation test (sign flips), Holm-Bonferroni over the pipelines "
        "compared with the baseline, per dataset and measure",
        "datasets": datasets,
    }


def first_stage_depth(stages: list[dict[str, Any]]) -> str:
    """Candidates the first stage retrieves per query, e.g. ``1000`` (bm25) or ``100+100`` (a fusion):
    ms/query of pipelines compare like with like only at equal depth."""
    if not stages:
        return ""

    def depth(stage: dict[str, Any]) -> int:
        return min(int(stage.get("k", 1000)), int(stage.get("cutoff") or 10**9))

    first = stages[0]
    if first.get("retrievers"):
        return "+".join(str(depth(r)) for r in first["retrievers"])
    return str(depth(first))


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: one table per dataset, marks against the baseline, skipped pipelines."""
    m = report["machine"]
    lines = [
        "# Evaluation report",
        "",
        f"Created {report['created']} on {m['cpu']} ({m['cores']} cores)"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f", commit {m.get('commit')}{' (dirty)' if m.get('dirty') else ''}.",
    ]
    if report.get("command"):
        lines += ["", f"Command: `{report['command']}`"]
    lines += [
        "",
        f"Marks against the baseline: ▲/▼ both the paired t-test and the randomisation test reject at "
        f"α={report['alpha']} after Holm-Bonferroni correction; (▲)/(▼) only one of them does. "
        "nDCG@10 brackets: 95% bootstrap CI over queries. ms/query: batch (64 queries) wall time per query "
        "on this machine, summed over the pipeline's stages (a stage shared with another pipeline is computed "
        "once and counted in each). W/T/L: queries where the pipeline beats, ties or loses to the baseline on "
        f"{TESTED_MEASURES[0]}. retrieves: candidates the first stage fetches per query; compare ms/query at equal depth "
        "(a BM25 at k=1000 is slower than one at k=100 with the same nDCG@10).",
    ]
    for ds in report["datasets"]:
        lines += ["", f"## {ds['dataset']} ({ds['split']}, {ds['num_queries']} queries)", ""]
        coverage = ds.get("provenance", {}).get("coverage", {})
        if coverage.get("missing"):
            absent = ", ".join(f"`{n}` misses {k}" for n, k in coverage["missing"].items())
            lines += [f"**Coverage**: {absent} of {coverage['judged']} judged queries; policy `{coverage['policy']}`: "
                      f"scored on {ds['num_queries']} queries.", ""]
        marks = {(c["system"], c["measure"]): c for c in ds["comparisons"]}
        header = ["pipeline", *TABLE_MEASURES, f"Δ{TESTED_MEASURES[0]}", "p (t / rand, Holm)", "W/T/L", "retrieves",
                  "ms/query", "stages (ms/query)"]
        configs = ds.get("provenance", {}).get("pipelines", {})
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, sys_ in ds["systems"].items():
            cells = [f"`{name}`"]
            for measure in TABLE_MEASURES:
                value = f"{sys_['metrics'][measure]:.4f}"
                comp = marks.get((name, measure))
                if comp and comp["mark"]:
                    value += f" {comp['mark']}"
                if measure == "nDCG@10" and sys_["ndcg10_ci95"][0] is not None:
                    lo, hi = sys_["ndcg10_ci95"]
                    value += f" [{lo:.3f}, {hi:.3f}]"
                cells.append(value)
            comp = marks.get((name, TESTED_MEASURES[0]))
            cells.append(f"{comp['delta']:+.4f}" if comp else "baseline" if name == ds["baseline"] else "")
            cells.append(f"{comp['t_p_holm']:.3g} / {comp['rand_p_holm']:.3g}" if comp else "")
            cells.append(f"{comp['wins']}/{comp['ties']}/{comp['losses']}" if comp and "wins" in comp else "")
            cells.append(first_stage_depth(configs.get(name, {}).get("stages", [])))
            cells.append(f"{sys_['ms_per_query']:.1f}" if sys_["ms_per_query"] is not None else "n/a")
            stage_ms = ", ".join(f"{k} {v:.1f}" for k, v in sys_["stage_ms_per_query"].items())
            cells.append(stage_ms + (f" ({sys_['reused_stages']} shared)" if sys_["reused_stages"] else ""))
            if sys_["degraded"]:  # a stage failed open: these numbers are not the pipeline's own
                cells[0] += f" ⚠ degraded ({', '.join(sys_['degraded'])} failed open)"
            lines.append("| " + " | ".join(cells) + " |")
        if ds["curves"]:
            lines += ["", f"Rerank depth (candidates the first reranker sees) vs {CURVE_MEASURE} and ms/query "
                      "(depth 0 = first stage alone):", ""]
            lines += ["| pipeline | depth | " + CURVE_MEASURE + " | ms/query |", "|---|---|---|---|"]
            for name, points in ds["curves"].items():
                for p in points:
                    lines.append(f"| `{name}` | {p['depth']} | {p['metrics'][CURVE_MEASURE]:.4f} | {p['ms_per_query']:.1f} |")
        cached = ds.get("provenance", {}).get("from_stage_cache") or {}
        if cached:
            lines += ["", "First stages read from the stage cache (`--stage-cache`): their results and ms/query were "
                      "measured on another machine: " + "; ".join(f"`{k}` on {v}" for k, v in cached.items()) + "."]
        if ds["skipped"]:
            lines += ["", "Not evaluated (cannot be built here, crashed, or left out on the command line):", ""]
            lines += [f"- `{name}`: {reason}" for name, reason in ds["skipped"].items()]
        slug = _slug(ds["dataset"])
        if ds["systems"]:
            tradeoff = f"![trade-off](plots/{slug}-tradeoff.png) " if _has_latency(ds) else ""
            lines += ["", f"{tradeoff}![nDCG@10 with CIs](plots/{slug}-ndcg-ci.png)"]
    return "\n".join(lines) + "\n"


def plot_dataset(ds: dict[str, Any], folder: Path) -> list[Path]:
    """Two PNGs: nDCG@10 vs ms/query (depth curves as lines), and nDCG@10 with 95% CIs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install -e '.[report]'") from exc
    folder.mkdir(parents=True, exist_ok=True)
    slug = _slug(ds["dataset"])
    written = [_plot_ci(ds, folder / f"{slug}-ndcg-ci.png", plt)]
    if _has_latency(ds):
        written.append(_plot_tradeoff(ds, folder / f"{slug}-tradeoff.png", plt))
    return written


def _has_latency(ds: dict[str, Any]) -> bool:
    return any(s["ms_per_query"] is not None for s in ds["systems"].values())


def _plot_tradeoff(ds: dict[str, Any], path: Path, plt: Any) -> Path:
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, sys_) in enumerate(ds["systems"].items()):
        color, curve = f"C{i % 10}", ds["curves"].get(name)
        if curve:
            xs = [p["ms_per_query"] for p in curve]
            ys = [p["metrics"][CURVE_MEASURE] for p in curve]
            ax.plot(xs, ys, marker="o", color=color, label=f"{name} (labels: rerank depth)")
            for p, x, y in zip(curve, xs, ys, strict=True):
                label = str(p["depth"]) if p["depth"] else "1st stage"
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        elif sys_["ms_per_query"] is not None:
            ax.scatter([sys_["ms_per_query"]], [sys_["metrics"][CURVE_MEASURE]], marker="s", color=color, label=name, zorder=3)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=6)
    ax.set_xlabel("ms/query (log scale)")
    ax.set_ylabel(CURVE_MEASURE)
    ax.set_title(f"{ds['dataset']} {ds['split']}: effectiveness vs latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_ci(ds: dict[str, Any], path: Path, plt: Any) -> Path:
    names = list(ds["systems"])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    values = [ds["systems"][n]["metrics"]["nDCG@10"] for n in names]
    cis = [ds["systems"][n]["ndcg10_ci95"] for n in names]
    err = [[v - (c[0] if c[0] is not None else v) for v, c in zip(values, cis, strict=True)],
           [(c[1] if c[1] is not None else v) - v for v, c in zip(values, cis, strict=True)]]
    ax.barh(names, values, xerr=err, capsize=4, color="tab:blue", alpha=0.7)
    ax.invert_yaxis()
    ax.set_xlabel("nDCG@10 (95% bootstrap CI)")
    ax.set_title(f"{ds['dataset']} {ds['split']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], outcomes: Sequence[DatasetOutcome], out: Path, plots: bool = True) -> list[Path]:
    """Write the report files under ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.md"]
    _atomic_write(written[0], json.dumps(report, indent=2, sort_keys=False))
    for outcome in outcomes:
        path = out / "per_query" / f"{_slug(outcome.dataset)}.json"
        per_q = {name: s.per_query for name, s in outcome.systems.items()}
        _atomic_write(path, json.dumps({"dataset": outcome.dataset, "split": outcome.split, "systems": per_q}))
        written.append(path)
    if plots:
        for ds in report["datasets"]:
            if ds["systems"]:
                written += plot_dataset(ds, out / "plots")
    _atomic_write(written[1], render_markdown(report))
    return written


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
