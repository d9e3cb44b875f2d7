"""``python -m training.dense.report``: re-score the suite's TREC runs with ir_measures and print the table.

The suite computes nDCG@10 / R@100 itself on the GPU box (``retrieval_eval``); this re-scores the
run files it brought back with ``eval.metrics`` (ir_measures), the project's reference scorer::

    python -m training.dense.report --results reports/dense --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ir_measures import R, nDCG

from eval.metrics import evaluate
from training.dense import options

MEASURES = [nDCG @ 10, R @ 100]


def read_trec(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    with Path(path).open() as f:
        for line in f:
            qid, _, doc, _, score, _ = line.split()
            run.setdefault(qid, {})[doc] = float(score)
    return run


def qrels_for(data_dir: Path, eval_name: str, split_seed: int) -> dict[str, dict[str, int]]:
    """The qrels an eval set of the suite was scored on (``scifact/test``, ``xquad-r/en/heldout``, ...)."""
    collection, _, split = eval_name.rpartition("/")
    es = options.eval_sets(data_dir, [f"{collection}:{split}"], split_seed)[0]
    return es.qrels


def rescore(results_dir: Path, data_dir: Path, split_seed: int = 13) -> dict[str, dict[str, dict[str, float]]]:
    """``step -> eval set -> measures`` from ``results_dir/runs/<step>/<eval set>.trec``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    cache: dict[str, dict] = {}
    for trec in sorted(Path(results_dir, "runs").glob("*/*.trec")):
        name = trec.stem.replace("__", "/")
        if name not in cache:
            cache[name] = qrels_for(data_dir, name, split_seed)
        out.setdefault(trec.parent.name, {})[name] = evaluate(cache[name], read_trec(trec), MEASURES)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.dense.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="the suite's --out folder (runs/ inside)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    scores = rescore(args.results, options.data_dir(args))
    print("| step | eval set | nDCG@10 | R@100 |\n|---|---|---|---|")
    for step, sets in scores.items():
        for name, m in sets.items():
            print(f"| {step} | {name} | {m['nDCG@10']:.4f} | {m['R@100']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(scores, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
