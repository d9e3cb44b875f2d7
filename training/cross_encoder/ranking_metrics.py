"""nDCG@k for the training jobs, by ir-measures (trec_eval's definition: graded gain, log2 discount).

Score ties are broken as trec_eval breaks them (ir-measures runs it), so a training report and
``python -m eval`` agree on the same run.
"""

from __future__ import annotations

from typing import Mapping

from ir_measures import nDCG

from eval.metrics import per_query


def ndcg_at_k(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], k: int = 10) -> float:
    """Mean nDCG@k over the queries with a relevant document (a query missing from the run scores 0)."""
    judged = {q: dict(rels) for q, rels in qrels.items() if any(r > 0 for r in rels.values())}
    if not judged:
        return 0.0
    values = per_query(judged, {q: dict(run.get(q, {})) for q in judged}, [nDCG @ k])[f"nDCG@{k}"]
    return sum(values.values()) / len(judged)
