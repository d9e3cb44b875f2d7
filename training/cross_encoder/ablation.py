"""Train several variants on one bundle and compare them on dev and (for the record) test.

Variants differ from the base config in one knob each: curriculum on/off, pointwise vs
listwise loss, BM25-only vs BM25+dense negatives. The variant with the best dev nDCG@10 is
the one saved as the model.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

from training.cross_encoder.data.bundle import Bundle, fused, zscore_hybrid
from training.cross_encoder.trainer import TrainConfig, TrainResult, evaluate_report, train

logger = logging.getLogger(__name__)

VARIANTS: dict[str, dict] = {
    "listwise+curriculum": {},
    "listwise+curriculum+dense-negs": {"retrievers": ("bm25", "dense")},
    "listwise": {"curriculum": False},
    "pointwise+curriculum": {"loss": "pointwise"},
    "pointwise": {"loss": "pointwise", "curriculum": False},
    "listwise+curriculum+dense-negs+teacher": {"retrievers": ("bm25", "dense"), "teacher": "hybrid"},
    "listwise+dense-negs+teacher": {"retrievers": ("bm25", "dense"), "teacher": "hybrid", "curriculum": False},
}


def first_stages(bundle: Bundle, depth: int = 100) -> dict[str, dict[str, list]]:
    """``bm25`` and (when the bundle has dense lists) ``hybrid`` = RRF(bm25, dense) and ``zhybrid`` = the
    shipped z-score fusion, per query."""
    out = {"bm25": {q.qid: q.bm25[:depth] for q in bundle.queries}}
    if any(q.dense for q in bundle.queries):
        out["hybrid"] = {q.qid: fused(q, depth) for q in bundle.queries}
        out["zhybrid"] = {q.qid: zscore_hybrid(q, depth) for q in bundle.queries}
    return out


def run_variant(name: str, cfg: TrainConfig, train_bundle: Bundle, eval_bundle: Bundle | None,
                extra_evals: dict[str, Bundle] | None = None, dump_dir: Path | None = None,
                on_trained: Callable[[TrainResult], None] | None = None) -> tuple[dict, TrainResult]:
    """Train one variant and report it; ``dump_dir`` gets every reported run's raw scores (dev included).

    ``on_trained(result)`` runs between training and the reports (the caller saves the model there, so a run
    stopped during its long evaluations still leaves the trained model behind).
    """
    logger.info("variant %s: %s", name, cfg.to_dict())
    result = train(cfg, train_bundle)
    if on_trained is not None:
        on_trained(result)

    def dump(tag: str) -> Path | None:
        return dump_dir / f"{name}--{tag}.json" if dump_dir else None

    test = evaluate_report(result, cfg, eval_bundle, first_stages(eval_bundle), dump=dump("test")) if eval_bundle else {}
    dev = Bundle(train_bundle.meta, train_bundle.docs, train_bundle.role("dev"))
    if dump_dir and dev.queries:  # dev runs for choosing the blend afterwards (never test)
        evaluate_report(result, cfg, dev, first_stages(dev), dump=dump("dev"))
    for dataset, bundle in (extra_evals or {}).items():  # unseen collections: reported, never used to select
        scores = evaluate_report(result, cfg, bundle, first_stages(bundle), dump=dump(dataset))
        test.update({f"{dataset}:{k}": v for k, v in scores.items()})
    row = {"name": name, "config": cfg.to_dict(), "dev_ndcg10": result.best_dev, "dev_history": result.dev_history,
           "best_epoch": result.best_epoch, "steps": result.steps, "seconds": result.seconds, "test": test}
    logger.info("variant %s: dev %.4f test %s", name, result.best_dev, test)
    return row, result


def run_ablation(base: TrainConfig, names: list[str], train_bundle: Bundle, eval_bundle: Bundle | None,
                 save_to: Path | None, dtype: str = "bfloat16", on_variant: Callable[[dict], None] | None = None,
                 extra_evals: dict[str, Bundle] | None = None, dump_dir: Path | None = None) -> dict:
    """Train every named variant; save the best by dev nDCG@10 to ``save_to``; return the report.

    ``on_variant(report so far)`` is called after each variant (a long run leaves partial results).
    """
    from pipeline.scorers.cross_encoder_folder import write_module

    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown} (known: {sorted(VARIANTS)})")
    rows, best = [], None
    for name in names:
        cfg = dataclasses.replace(base, **VARIANTS[name])
        cfg.__post_init__()
        best_dev = best[0]["dev_ndcg10"] if best else None

        def save_if_best(result: TrainResult, best_dev=best_dev, name=name) -> None:  # dev is known once trained
            if save_to is not None and (best_dev is None or result.best_dev > best_dev):
                write_module(result.module, result.tokenizer, save_to, dtype=dtype)
                logger.info("saved %s (dev nDCG@10 %.4f) to %s before its reports", name, result.best_dev, save_to)

        row, result = run_variant(name, cfg, train_bundle, eval_bundle, extra_evals, dump_dir, on_trained=save_if_best)
        rows.append(row)
        if best is None or row["dev_ndcg10"] > best[0]["dev_ndcg10"]:
            best = (row, result)
        if on_variant is not None:
            on_variant({"variants": rows, "chosen": best[0]})
    return {"variants": rows, "chosen": best[0] if best else None}
