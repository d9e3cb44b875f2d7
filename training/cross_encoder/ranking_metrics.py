"""nDCG@k as trec_eval computes it (linear gain, log2 discount), without extra dependencies.

The GPU machine has no ``ir_measures``; ``tests/test_training_cross_encoder.py`` checks this
function against it.
"""

from __future__ import annotations

import math
from typing import Mapping


def ndcg_at_k(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], k: int = 10) -> float:
    """Mean nDCG@k over the judged queries (a query missing from the run scores 0)."""
    total = 0.0
    judged = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    for qid in judged:
        rels = qrels[qid]
        ranked = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], _neg(kv[0])))[:k]
        dcg = sum(max(rels.get(d, 0), 0) / math.log2(i + 2) for i, (d, _) in enumerate(ranked))
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        total += dcg / idcg if idcg > 0 else 0.0
    return total / len(judged) if judged else 0.0


def _neg(doc_id: str):
    # trec_eval breaks score ties by descending doc id
    return tuple(-ord(c) for c in doc_id)
