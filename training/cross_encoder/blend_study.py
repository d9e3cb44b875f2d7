"""Blend studies on dumped reranker scores (``train --dump-scores``): no GPU, no model, seconds.

A dump holds, per first stage and query, ``[doc, first-stage score, reranker score]`` rows and
the qrels. From it this module computes nDCG@10 of the first stage, of the reranker alone and
of the served blend ``alpha * minmax(reranker) + (1 - alpha) * minmax(first stage)`` for any
alpha, per collection (dev dumps of multi-domain training hold ``<dataset>/<qid>`` ids and are
split by that prefix). Used to choose a variant and the blend on dev data only::

    python -m training cross-encoder blend --dumps results/.../scores --out blend.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from training.cross_encoder.ranking_metrics import ndcg_at_k

ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
Rows = list  # [[doc, first, ce], ...]


def minmax(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    return [1.0] * len(values) if hi == lo else [(v - lo) / (hi - lo) for v in values]


def blend_run(stage: dict[str, Rows], weight: Callable[[Rows], float] | float) -> dict[str, dict[str, float]]:
    """The served blend per query; ``weight`` is a constant alpha or a per-query function of the rows."""
    run = {}
    for qid, rows in stage.items():
        if not rows:
            run[qid] = {}
            continue
        alpha = weight(rows) if callable(weight) else weight
        first, ce = minmax([r[1] for r in rows]), minmax([r[2] for r in rows])
        run[qid] = {r[0]: alpha * c + (1 - alpha) * f for r, f, c in zip(rows, first, ce, strict=True)}
    return run


def split_by_dataset(dump: dict) -> dict[str, dict]:
    """``{dataset: dump}`` for ids ``<dataset>/<qid>``; a dump without prefixes is returned as ``{"": dump}``."""
    names = {q.split("/", 1)[0] for q in dump["qrels"] if "/" in q}
    if not names:
        return {"": dump}
    out = {}
    for name in sorted(names):
        keep = {q for q in dump["qrels"] if q.startswith(name + "/")}
        out[name] = {"qrels": {q: dump["qrels"][q] for q in keep},
                     "stages": {s: {q: r for q, r in rows.items() if q in keep} for s, rows in dump["stages"].items()}}
    return out


def curve(dump: dict, stage: str, alphas=ALPHAS) -> dict[str, float]:
    """nDCG@10 of ``stage`` blended at each alpha (0 = the first stage alone, 1 = the reranker alone)."""
    rows = dump["stages"][stage]
    return {f"{a:.1f}": ndcg_at_k(dump["qrels"], blend_run(rows, a)) for a in alphas}


def load_dumps(folder: Path) -> dict[str, dict[str, dict]]:
    """``{variant: {tag: dump}}`` from files ``<variant>--<tag>.json``."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted(Path(folder).glob("*--*.json")):
        variant, tag = path.stem.rsplit("--", 1)
        out.setdefault(variant, {})[tag] = json.loads(path.read_text())
    return out


def summary(folder: Path, stages=("bm25", "zhybrid")) -> dict:
    """Every variant x collection x stage curve; dev dumps split per collection (``dev:<dataset>``)."""
    table = {}
    for variant, tags in load_dumps(folder).items():
        for tag, dump in tags.items():
            parts = split_by_dataset(dump) if tag == "dev" else {"": dump}
            for name, part in parts.items():
                key = f"dev:{name}" if tag == "dev" else tag
                for stage in stages:
                    if stage in part["stages"]:
                        table.setdefault(variant, {}).setdefault(key, {})[stage] = curve(part, stage)
    return table
