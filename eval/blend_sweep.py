"""Choose a reranking stage's ``interpolate`` (alpha) through the served pipeline, on a dev split only.

``run`` evaluates a configured pipeline once (any reranking stage with ``interpolate``, e.g. ``ml``'s
``modular_ce`` or ``hybrid>>ce``'s ``ce``) and keeps, per query, each reranked hit's incoming score and raw
reranker score. ``choose`` replays the stage's own blend (:func:`~pipeline.core.score_fusion.rerank_output`)
at every alpha of a grid over the pooled ``--dev`` files, picks the best (ties: the alpha already configured,
then the smaller), and reports the ``--apply`` files (held-out splits) at the configured and the chosen alpha.
A held-out file is never read before the choice is made::

    python -m eval.blend_sweep run --config configs/multilingual.yaml --dataset runs/xquad-splits/xquad-r/de \\
        --collection xquad-r-de --split dev --pipeline ml --stage modular_ce --out runs/blend/de-dev.json
    python -m eval.blend_sweep choose --dev runs/blend/*-dev.json --apply runs/blend/*-heldout.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Iterable

from pipeline.core.score_fusion import rerank_output
from pipeline.core.types import Hit

GRID = [round(i * 0.05, 2) for i in range(21)]


def head_of(hits: Iterable[Hit], stage: str) -> list[list]:
    """``[[doc, incoming score, reranker score], ...]`` of the hits ``stage`` reranked, in their incoming order.

    The incoming score is the stage score recorded just before ``stage``'s own (a hit's ``stage_scores`` keep the
    order the stages ran in). With the stage's blend on, the hits below the reranker's depth (no ``<stage>_interpolated``
    score) are left out; without it every hit with a ``stage`` score counts (configure the depth to cover them all)."""
    hits = list(hits)
    blended = any(f"{stage}_interpolated" in h.stage_scores for h in hits)
    rows = []
    for h in hits:
        keys = list(h.stage_scores)
        if stage not in keys or keys.index(stage) == 0 or (blended and f"{stage}_interpolated" not in keys):
            continue
        rows.append([h.doc_id, float(h.stage_scores[keys[keys.index(stage) - 1]]), float(h.stage_scores[stage])])
    return sorted(rows, key=lambda r: -r[1])


def replay(head: list[list], alpha: float | None, stage: str = "rerank") -> dict[str, float]:
    """The stage's final scores of one query's head at ``alpha`` (None: the reranker alone), as the stage computes them."""
    incoming = [Hit("q", d, s) for d, s, _ in head]
    reranked = [Hit("q", d, r) for d, _, r in head]
    return {h.doc_id: h.score for h in rerank_output(reranked, incoming, alpha, stage)}


def ndcg_at(files: list[dict], alpha: float | None) -> float:
    """Mean nDCG@10 over every query of ``files`` (pooled) with the blend at ``alpha``."""
    from eval.metrics import evaluate, parse_measures

    measures = parse_measures(["nDCG@10"])
    total = n = 0
    for f in files:
        run = {qid: replay(head, alpha) for qid, head in f["heads"].items()}
        m = next(iter(evaluate(f["qrels"], run, measures).values()))
        total += m * len(f["qrels"])
        n += len(f["qrels"])
    return total / n if n else 0.0


def _run(args) -> int:
    from eval.runner import judged_queries, run_eval
    from pipeline.registry import load_config

    config = load_config(args.config)
    _, qrels = judged_queries(args.dataset, args.split)  # a wrong split fails here, before any index is loaded
    res = run_eval(args.dataset, args.split, args.pipeline, config, args.index_root, args.models_dir,
                   collection=args.collection)
    heads = {qid: head_of(hits, args.stage) for qid, hits in res.results.items()}
    if not any(heads.values()):
        raise ValueError(f"no hit of {args.pipeline!r} carries a {args.stage!r} score: is that the reranking stage's name?")
    payload = {"pipeline": args.pipeline, "stage": args.stage, "dataset": res.dataset, "split": args.split,
               "served_ndcg10": res.metrics.get("nDCG@10"), "heads": heads, "qrels": qrels}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt", encoding="utf-8") if args.out.suffix == ".gz" else open(args.out, "w") as fh:
        json.dump(payload, fh)
    print(json.dumps({"out": str(args.out), "dataset": res.dataset, "split": args.split, "queries": len(heads),
                      "served_ndcg10": payload["served_ndcg10"]}))
    return 0


def _load(path: Path) -> dict:
    with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path) as fh:
        return json.load(fh)


def _choose(args) -> int:
    dev = [_load(p) for p in args.dev]
    curve = {a: ndcg_at(dev, a) for a in GRID}
    best = max(curve.values())
    ties = [a for a, v in curve.items() if v >= best - 1e-12]
    chosen = args.configured if args.configured in ties else min(ties)
    out = {"dev_files": [str(p) for p in args.dev], "dev_curve": curve, "configured": args.configured, "chosen": chosen,
           "dev_at_configured": curve[args.configured] if args.configured in curve else ndcg_at(dev, args.configured),
           "dev_at_chosen": curve[chosen]}
    print(f"dev (pooled, {sum(len(f['qrels']) for f in dev)} queries): "
          + " ".join(f"{a}:{v:.4f}" for a, v in curve.items()))
    print(f"chosen alpha {chosen} (dev {curve[chosen]:.4f}; configured {args.configured}: {out['dev_at_configured']:.4f})")
    applied = {}
    for p in args.apply:  # read only now, after the choice
        f = _load(p)
        first = ndcg_at([f], 0.0)
        row = {"first_stage": first, "reranker_alone": ndcg_at([f], 1.0),
               "configured": ndcg_at([f], args.configured), "chosen": ndcg_at([f], chosen), "served": f.get("served_ndcg10")}
        applied[f"{f['dataset']}|{f['split']}"] = row
        print(f"{f['dataset']:>16} {f['split']:>8}: first {first:.4f}  alone {row['reranker_alone']:.4f}  "
              f"alpha {args.configured}: {row['configured']:.4f} ({row['configured'] - first:+.4f})  "
              f"alpha {chosen}: {row['chosen']:.4f} ({row['chosen'] - first:+.4f})")
    out["applied"] = applied
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    from eval.arguments import add_common_options

    p = argparse.ArgumentParser(prog="python -m eval.blend_sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="evaluate a pipeline once and keep each reranked hit's two scores")
    run.add_argument("--dataset", type=Path, required=True)
    run.add_argument("--split", required=True)
    run.add_argument("--collection", default=None)
    run.add_argument("--pipeline", required=True)
    run.add_argument("--stage", required=True, help="the reranking stage's name (ce, modular_ce, listwise)")
    run.add_argument("--out", type=Path, required=True, help="JSON (.json.gz: compressed)")
    add_common_options(run)
    choose = sub.add_parser("choose", help="alpha from the pooled dev files; report the --apply files")
    choose.add_argument("--dev", type=Path, nargs="+", required=True)
    choose.add_argument("--apply", type=Path, nargs="*", default=[])
    choose.add_argument("--configured", type=float, required=True, help="the alpha the config has now")
    choose.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    if args.action == "choose" and not 0.0 <= args.configured <= 1.0:
        p.error(f"--configured must be in [0, 1], got {args.configured}")
    try:
        return _run(args) if args.action == "run" else _choose(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
