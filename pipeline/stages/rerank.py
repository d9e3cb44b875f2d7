"""The one reranking stage: looks the candidates' passages up, cuts, hands texts to a scorer, blends, sorts.

The scorer never fetches a document (:mod:`pipeline.scorers.base`); this stage does, through
:class:`~pipeline.scorers.passages.Passages`. The cross-encoder, listwise and modular rerankers are
configs + builders of this stage (``cross_encoder.py``, ``listwise.py``, ``modular_reranker.py``).

* a :class:`~pipeline.scorers.base.PairScorer` rescores the top ``top_n`` candidates of each query
  (all of them with ``top_n=None``); the output is those candidates, re-sorted, then the rest in their
  incoming order below them (:func:`~pipeline.core.score_fusion.rerank_output`).
* a :class:`~pipeline.scorers.base.ListwiseScorer` reorders the top ``top_n``; the rest keep their
  order below, with rank-based scores (:func:`~pipeline.core.score_fusion.rescore_listwise`).

With ``interpolate: alpha`` the final score is, per query over the reranked candidates,
``alpha * minmax(reranker) + (1 - alpha) * minmax(incoming score)``; each hit keeps the raw
reranker score under the stage's name and the blend under ``<name>_interpolated``.

Example::

    ce = RerankStage(ServedScorer(engine), Passages(docstore), top_n=100, interpolate=0.5, name="ce")
    pipeline = (bm25 % 100) >> ce
"""

from __future__ import annotations

from typing import Sequence

from pipeline.core.score_fusion import rerank_output, rescore_listwise
from pipeline.core.stage import Stage, phase
from pipeline.core.types import Query, Results
from pipeline.scorers.base import ListwiseScorer, PairScorer
from pipeline.scorers.passages import Passages


class RerankStage(Stage):
    """Rerank each query's candidates with ``scorer`` over the texts ``passages`` gives."""

    name = "rerank"
    needs_candidates = True

    def __init__(self, scorer: PairScorer | ListwiseScorer, passages: Passages, top_n: int | None = 100,
                 interpolate: float | None = None, name: str | None = None):
        if not isinstance(scorer, (PairScorer, ListwiseScorer)):
            raise TypeError(f"a reranker needs a PairScorer or a ListwiseScorer, got {type(scorer).__name__}")
        if interpolate is not None and not 0.0 <= interpolate <= 1.0:
            raise ValueError(f"interpolate must be in [0, 1], got {interpolate}")
        if top_n is not None and top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        self.scorer, self.passages, self.top_n, self.interpolate = scorer, passages, top_n, interpolate
        if name:
            self.name = name

    def notes(self) -> list[str]:
        return [f"{self.name}: {note}" for note in self.scorer.notes()]

    def fast_path(self) -> dict | None:
        return self.scorer.fast_path()

    def language_choice(self, query: Query) -> dict | None:
        return self.scorer.language_choice(query)

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        candidates = candidates or {}
        ranked = {q.query_id: list(candidates.get(q.query_id, [])) for q in queries}
        heads = {qid: hits[: self.top_n] for qid, hits in ranked.items()}
        with phase("docs"):
            texts = self.passages.texts(sorted({h.doc_id for hits in heads.values() for h in hits}))
        passages = [[texts[h.doc_id] for h in heads[q.query_id]] for q in queries]
        if isinstance(self.scorer, ListwiseScorer):
            orders = self.scorer.rank_batch(queries, passages)
            return {q.query_id: rescore_listwise(ranked[q.query_id], order, self.interpolate, self.name)
                    for q, order in zip(queries, orders, strict=True)}
        scores = self.scorer.score_batch(queries, passages)
        out: Results = {}
        for q, row in zip(queries, scores, strict=True):
            head = heads[q.query_id]
            hits = [hit.rescored(self.name, float(s)) for hit, s in zip(head, row, strict=True)]
            out[q.query_id] = rerank_output(hits, ranked[q.query_id], self.interpolate, self.name)
        return out
