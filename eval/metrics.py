"""Metrics via ir-measures, on ``(query_id, doc_id, score)`` results."""

from __future__ import annotations

from typing import Mapping

import ir_measures
from ir_measures import AP, RR, R, nDCG

DEFAULT_MEASURES = [nDCG @ 10, RR @ 10, R @ 100, R @ 1000, AP]
# Names as printed (ir-measures calls MAP "AP").
DISPLAY = {"nDCG@10": "nDCG@10", "RR@10": "RR@10", "R@100": "R@100", "R@1000": "R@1000", "AP": "MAP"}


def evaluate(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], measures=None
) -> dict[str, float]:
    """Aggregate metrics; queries of the qrels missing from the run count as zero."""
    measures = measures or DEFAULT_MEASURES
    agg = ir_measures.calc_aggregate(measures, qrels, run)
    return {DISPLAY.get(str(m), str(m)): float(agg[m]) for m in measures}


def per_query(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], measures=None
) -> dict[str, dict[str, float]]:
    """``measure -> {query_id: value}`` (every judged query present, zero when unretrieved)."""
    measures = measures or DEFAULT_MEASURES
    out: dict[str, dict[str, float]] = {DISPLAY.get(str(m), str(m)): {q: 0.0 for q in qrels} for m in measures}
    for metric in ir_measures.iter_calc(measures, qrels, run):
        out[DISPLAY.get(str(metric.measure), str(metric.measure))][metric.query_id] = float(metric.value)
    return out


ALIASES = {"MAP": "AP", "MRR@10": "RR@10", "Recall@100": "R@100", "Recall@1000": "R@1000"}


def parse_measures(names: list[str] | None) -> list:
    """ir-measures objects from names such as ``nDCG@10``, ``P@5``, ``MAP``, ``R@100``, ``Judged@10``
    (the default measures when ``names`` is empty); an unknown name is a ValueError that lists examples."""
    if not names:
        return list(DEFAULT_MEASURES)
    out = []
    for name in names:
        try:
            out.append(ir_measures.parse_measure(ALIASES.get(name, name)))
        except (ValueError, NameError, SyntaxError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"unknown measure {name!r} ({exc}); e.g. nDCG@10, P@5, MAP, RR@10, R@100, Judged@10") from exc
    return out
