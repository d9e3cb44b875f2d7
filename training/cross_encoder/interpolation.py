"""Tune the ``cross_encoder`` stage's ``interpolate`` (alpha) on the training bundles' dev queries.

The final score of a reranked candidate is ``alpha * minmax(reranker) + (1 - alpha) * minmax(first
stage)`` per query (:func:`pipeline.stages.fusion.interpolate_scores`; alpha 1 = the reranker alone).
Every candidate pair is scored once by the serving scorer (:class:`CrossEncoderScorer`, the same
truncation and precision as the stage); then alpha runs over a grid on

* ``dev``: the dev queries held out of each training bundle (never trained on; the model was
  early-stopped on them, so they are slightly optimistic for the reranker),
* ``test`` of each training bundle and every ``--extra-eval`` bundle (reported, never used to choose),

for two first stages as the service runs them: ``bm25`` (top-100) and ``hybrid`` (z-score linear
fusion, 0.6 BM25 / 0.4 dense, of both top-100 lists; needs bundles with dense lists, see ``densify``).
The chosen alpha maximises the mean of the per-collection dev nDCG@10 (ties: the larger alpha, i.e.
more reranker). With ``--heldout-report`` (this tool's report of another reranker on the dev queries of a
domain that reranker was not trained on) it maximises the mean of that in-domain curve and the held-out
domain's curve instead (:func:`with_heldout_domain`): a service meets collections its reranker never saw.
Example::

    python -m training cross-encoder interpolate --model models/ce-minilm \\
        --bundle .cache/ce/scifact .cache/ce/xquad-en --extra-eval .cache/ce/cranfield/eval-test.json.gz \\
        --out runs/ce-interpolation.json
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

from training.cross_encoder.data.bundle import BundleQuery, load_bundle
from training.cross_encoder.ranking_metrics import ndcg_at_k

logger = logging.getLogger(__name__)
GRID = [round(i * 0.05, 2) for i in range(21)]
HYBRID_WEIGHTS = (0.6, 0.4)
"""configs/pipelines.yaml's ``hybrid``: z-score linear fusion, alpha 0.6 on BM25."""


def first_stages(q: BundleQuery, depth: int = 100) -> dict[str, list[tuple[str, float]]]:
    """``{"bm25": [...], "hybrid": [...]}`` (hybrid only with dense lists), best first, top ``depth``."""
    from pipeline.core.score_fusion import linear_fusion

    out = {"bm25": q.bm25[:depth]}
    if q.dense:
        fused = linear_fusion([q.bm25[:depth], q.dense[:depth]], HYBRID_WEIGHTS, "zscore")
        out["hybrid"] = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
    return out


def mixed_run(queries: Sequence[BundleQuery], lists: dict[str, list[tuple[str, float]]],
              ce: dict[tuple[str, str], float], alpha: float) -> dict[str, dict[str, float]]:
    from pipeline.core.score_fusion import interpolate_scores

    run = {}
    for q in queries:
        hits = lists[q.qid]
        mixed = interpolate_scores([ce[(q.qid, d)] for d, _ in hits], [s for _, s in hits], alpha)
        run[q.qid] = dict(zip((d for d, _ in hits), mixed, strict=True))
    return run


def load_sets(bundles: Sequence[Path], extra_eval: Sequence[Path], split: str = "test"):
    """``[(collection, role, queries, docs)]``: each training bundle's dev and test queries, and the extra evals."""
    sets = []
    for folder in bundles:
        train = load_bundle(Path(folder) / "train.json.gz")
        name = str(train.meta.get("dataset", Path(folder).name))
        sets.append((name, "dev", train.role("dev"), train.docs))
        test_file = Path(folder) / f"eval-{split}.json.gz"
        if test_file.is_file():
            test = load_bundle(test_file)
            sets.append((name, "test", test.role(split), test.docs))
    for path in extra_eval:
        b = load_bundle(Path(path))
        sets.append((f"{b.meta.get('dataset', Path(path).parent.name)} (unseen)", "test", b.queries, b.docs))
    return [s for s in sets if s[2]]


def tune(scorer, sets, depth: int = 100) -> dict:
    """Score every pair once, then nDCG@10 per (collection, role, first stage, alpha); choose alpha on dev."""
    curves: dict[str, dict[str, dict[str, float]]] = {}
    seconds = 0.0
    for name, role, queries, docs in sets:
        lists = {q.qid: first_stages(q, depth) for q in queries}
        pairs = sorted({(q.qid, d) for q in queries for stage in lists[q.qid].values() for d, _ in stage})
        text = {q.qid: q.text for q in queries}
        start = time.perf_counter()
        scores = scorer.score_pairs([(text[qid], docs.get(d, "")) for qid, d in pairs])
        seconds += time.perf_counter() - start
        ce = dict(zip(pairs, scores, strict=True))
        qrels = {q.qid: q.qrels for q in queries}
        for stage in lists[queries[0].qid]:
            by_stage = {q.qid: lists[q.qid][stage] for q in queries}
            key = f"{name}|{role}|{stage}"
            curves[key] = {str(a): ndcg_at_k(qrels, mixed_run(queries, by_stage, ce, a)) for a in GRID}
            curves[key]["first_stage"] = ndcg_at_k(qrels, {qid: dict(h) for qid, h in by_stage.items()})
        logger.info("%s %s: %d queries, %d pairs scored", name, role, len(queries), len(pairs))
    chosen = {}
    for stage in ("bm25", "hybrid"):
        dev = [c for k, c in curves.items() if k.endswith(f"|dev|{stage}")]
        if dev:
            chosen[stage] = choose(dev)
    return {"grid": GRID, "depth": depth, "curves": curves, "chosen": chosen, "scoring_seconds": seconds}


def choose(curves: Sequence[dict]) -> dict:
    """The alpha with the best mean over ``curves`` (ties: the larger alpha), with that mean curve."""
    mean = {a: sum(c[str(a)] for c in curves) / len(curves) for a in GRID}
    top = max(mean.values())
    return {"alpha": max(a for a, v in mean.items() if v >= top - 1e-9), "dev_mean": top,
            "dev_mean_curve": {str(a): v for a, v in mean.items()}}


def with_heldout_domain(report: dict, heldout: dict) -> dict:
    """Choose alpha on the mean of the in-domain dev mean and a held-out domain's dev mean.

    ``heldout`` is an ``interpolate`` report of a model on dev queries of a domain it was NOT trained on
    (e.g. the SciFact-only reranker on XQuAD-R's dev questions): how a blend behaves on a collection
    the reranker has never seen, estimated without any test qrels. ``report["chosen"]`` becomes that
    choice; the in-domain-only one is kept as ``chosen_in_domain``.
    """
    out = dict(report, chosen_in_domain=report["chosen"], chosen={}, heldout_curves={})
    for stage, in_domain in report["chosen"].items():
        held = [c for k, c in heldout["curves"].items() if k.endswith(f"|dev|{stage}")]
        if not held:
            out["chosen"][stage] = in_domain
            continue
        out["heldout_curves"][stage] = choose(held)["dev_mean_curve"]
        both = [in_domain["dev_mean_curve"], out["heldout_curves"][stage]]
        out["chosen"][stage] = choose(both)
    return out


def table(report: dict) -> str:
    """Markdown: one row per (collection, role, first stage): first stage, reranker alone, chosen alpha."""
    lines = ["| collection | split | first stage | first stage alone | reranker alone (alpha 1) | alpha (dev) | blended |",
             "|---|---|---|---|---|---|---|"]
    for key, curve in report["curves"].items():
        name, role, stage = key.split("|")
        alpha = report["chosen"].get(stage, {}).get("alpha")
        blended = f"{curve[str(alpha)]:.4f}" if alpha is not None else "-"
        lines.append(f"| {name} | {role} | {stage} | {curve['first_stage']:.4f} | {curve['1.0']:.4f} | {alpha} | {blended} |")
    return "\n".join(lines)


def run(args) -> int:
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    sets = load_sets(args.bundle, args.extra_eval, args.split)
    if not any(role == "dev" for _, role, _, _ in sets):
        raise SystemExit("no dev queries in the bundles: mine them with `python -m training cross-encoder mine`")
    scorer = CrossEncoderScorer(args.model, device=args.device, precision=args.precision)
    report = tune(scorer, sets, args.depth)
    report.update(model=str(args.model), device=scorer.device, precision=args.precision,
                  bundles=[str(b) for b in args.bundle], extra_eval=[str(p) for p in args.extra_eval])
    if args.heldout_report:
        heldout = json.loads(args.heldout_report.read_text())
        report = with_heldout_domain(report, heldout)
        report["heldout_report"] = {"path": str(args.heldout_report), "model": heldout.get("model"),
                                    "bundles": heldout.get("bundles")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(table(report))
    for stage, c in report["chosen"].items():
        print(f"{stage}: alpha {c['alpha']} (mean dev nDCG@10 {c['dev_mean']:.4f})")
    return 0
