"""Tune the ``listwise`` stage's ``interpolate`` (alpha) offline, from benchmark runs of a dev split.

Each bench folder is a ``benchmarks/listwise_latency.py --out`` folder: ``input.trec`` (the first stage,
with its scores) and ``first.trec`` (the FIRST rerank). Per query and alpha, the stage's own
:func:`pipeline.stages.listwise.rescore_listwise` rebuilds what the stage outputs (head: FIRST's top
``depth``, its rank score blended with the input score by ``interpolate_hits``; tail: FIRST's order
below it, which is the input's), so the tuner and the stage cannot drift. nDCG@10 by
:func:`eval.metrics.evaluate` over the queries that both the qrels and the runs hold. Alpha runs over the
cross-encoder tuner's grid (0 .. 1, step 0.05) and is chosen by its rule on the dev curve: the best dev
nDCG@10, ties to the larger alpha (more reranker). Test is reported at every alpha, never used to choose.
Example::

    python -m training listwise interpolate --dev runs/listwise-dev --dev-qrels qrels/dev.tsv \\
        --test runs/listwise --test-qrels qrels/test.tsv --out runs/listwise-interpolation.json
"""

from __future__ import annotations

import json
import sys
from itertools import pairwise
from pathlib import Path
from typing import NoReturn

from pipeline.core.types import Hit, Results
from training.cross_encoder.interpolation import GRID, choose

DEFAULT_DEPTH = 100
StageInput = tuple[list[Hit], list[int]]
"""One query as the stage saw it: incoming hits (best first) and the head's FIRST order (incoming positions)."""


def bench_depth(folder: Path) -> int:
    """The depth the bench reranked (its ``listwise_bench.json``), else :data:`DEFAULT_DEPTH`."""
    summary = Path(folder) / "listwise_bench.json"
    return int(json.loads(summary.read_text()).get("depth", DEFAULT_DEPTH)) if summary.is_file() else DEFAULT_DEPTH


def read_bench(folder: Path) -> tuple[Results, Results]:
    """``(input run, FIRST run)`` of a bench folder; ValueError if a file is missing."""
    from eval.trec import read_run

    missing = [name for name in ("input.trec", "first.trec") if not (Path(folder) / name).is_file()]
    if missing:
        raise ValueError(f"{folder} lacks {' and '.join(missing)}: write them with "
                         f"`python -m benchmarks.listwise_latency --out {folder} ...`")
    return read_run(Path(folder) / "input.trec"), read_run(Path(folder) / "first.trec")


def stage_inputs(incoming: Results, first: Results, depth: int) -> dict[str, StageInput]:
    """Per query: the incoming hits (head in input order, then FIRST's tail) and the head's FIRST order."""
    if set(incoming) != set(first):
        raise ValueError("input.trec and first.trec hold different queries")
    out = {}
    for qid, reranked in first.items():
        scores = {h.doc_id: h.score for h in incoming[qid]}
        if set(scores) != {h.doc_id for h in reranked}:
            raise ValueError(f"query {qid}: input.trec and first.trec rank different documents")
        head, tail = reranked[:depth], [Hit(qid, h.doc_id, scores[h.doc_id]) for h in reranked[depth:]]
        if any(a.score < b.score for a, b in pairwise(tail)):
            raise ValueError(f"query {qid}: first.trec below rank {depth} is not in input.trec's order: "
                             f"the bench reranked deeper (pass its --depth)")
        by_input = sorted(head, key=lambda h: (-scores[h.doc_id], h.doc_id))
        position = {h.doc_id: i for i, h in enumerate(by_input)}
        out[qid] = ([Hit(qid, h.doc_id, scores[h.doc_id]) for h in by_input] + tail, [position[h.doc_id] for h in head])
    return out


def blended_run(queries: dict[str, StageInput], alpha: float) -> dict[str, dict[str, float]]:
    """The ``listwise`` stage's output run at ``interpolate: alpha``."""
    from pipeline.core.score_fusion import rescore_listwise

    return {qid: {h.doc_id: h.score for h in rescore_listwise(hits, order, alpha)} for qid, (hits, order) in queries.items()}


def ndcg10(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> float:
    from ir_measures import nDCG

    from eval.metrics import evaluate

    return evaluate(qrels, run, [nDCG @ 10])["nDCG@10"]


def split_curve(folder: Path, qrels_path: Path, depth: int | None = None) -> dict:
    """nDCG@10 of the input run, FIRST alone and the stage at every alpha of :data:`GRID` on one bench
    (``depth``: the bench's own when None)."""
    from eval.formats import read_qrels

    depth = depth or bench_depth(folder)
    incoming, first = read_bench(folder)
    queries = stage_inputs(incoming, first, depth)
    qrels = {q: rels for q, rels in read_qrels(qrels_path).items() if q in queries}
    if not qrels:
        raise ValueError(f"{qrels_path} shares no query with the runs in {folder}")

    def as_run(results: Results) -> dict[str, dict[str, float]]:
        return {qid: {h.doc_id: h.score for h in hits} for qid, hits in results.items()}

    return {"bench": str(folder), "qrels": str(qrels_path), "depth": depth, "queries": len(qrels),
            "input": ndcg10(qrels, as_run(incoming)), "first": ndcg10(qrels, as_run(first)),
            "curve": {str(a): ndcg10(qrels, blended_run(queries, a)) for a in GRID}}


def tune(dev: Path, dev_qrels: Path, test: Path | None = None, test_qrels: Path | None = None,
         depth: int | None = None) -> dict:
    """The dev curve, the chosen alpha, and (with ``test``) the test curve and its value at that alpha."""
    report = {"grid": GRID, "dev": split_curve(dev, dev_qrels, depth)}
    chosen = choose([report["dev"]["curve"]])
    report["chosen"] = {"alpha": chosen["alpha"], "dev_ndcg@10": chosen["dev_mean"],
                        "rule": "best dev nDCG@10, ties: the larger alpha"}
    if test is not None:
        report["test"] = split_curve(test, test_qrels, depth)
        report["chosen"]["test_ndcg@10"] = report["test"]["curve"][str(chosen["alpha"])]
    return report


def table(report: dict) -> str:
    """Markdown: input and FIRST alone, then one row per alpha (the chosen one starred)."""
    splits = [s for s in ("dev", "test") if s in report]
    lines = ["| alpha | " + " | ".join(f"{s} nDCG@10" for s in splits) + " |", "|---" * (len(splits) + 1) + "|"]
    rows = [("input (first stage)", "input"), ("FIRST alone", "first")]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(f"{report[s][key]:.4f}" for s in splits) + " |")
    for a in report["grid"]:
        star = " *" if a == report["chosen"]["alpha"] else ""
        lines.append(f"| {a}{star} | " + " | ".join(f"{report[s]['curve'][str(a)]:.4f}" for s in splits) + " |")
    return "\n".join(lines)


def run(args) -> int:
    if (args.test is None) != (args.test_qrels is None):
        return _fail("--test and --test-qrels go together")
    try:
        report = tune(args.dev, args.dev_qrels, args.test, args.test_qrels, args.depth)
    except ValueError as exc:  # eval's FormatError (bad run or qrels file) is a ValueError too
        return _fail(str(exc))
    out = args.out or Path(args.dev) / "interpolation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(table(report))
    chosen = report["chosen"]
    test = f", test nDCG@10 {chosen['test_ndcg@10']:.4f}" if "test_ndcg@10" in chosen else ""
    print(f"interpolate: {chosen['alpha']} (dev nDCG@10 {chosen['dev_ndcg@10']:.4f}{test}; depth {report['dev']['depth']}) -> {out}")
    return 0


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
