"""Read a mined bundle (see :mod:`training.cross_encoder.data.mining`) into typed rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BundleQuery:
    qid: str
    text: str
    role: str
    """``train``, ``dev``, or the eval split's name (``test``)."""
    qrels: dict[str, int]
    bm25: list[tuple[str, float]]
    dense: list[tuple[str, float]] = field(default_factory=list)

    @property
    def positives(self) -> list[str]:
        return [d for d, rel in self.qrels.items() if rel > 0]


@dataclass
class Bundle:
    meta: dict
    docs: dict[str, str]
    queries: list[BundleQuery]

    def role(self, role: str) -> list[BundleQuery]:
        return [q for q in self.queries if q.role == role]


def load_bundle(path: Path) -> Bundle:
    """Load ``train.json.gz`` / ``eval-<split>.json.gz``; raises ValueError on a malformed file."""
    try:
        from training.cross_encoder.data.mining import read_json

        raw = read_json(path)
        queries = [
            BundleQuery(r["qid"], r["text"], r["role"], {d: int(v) for d, v in r["qrels"].items()},
                        [(d, float(s)) for d, s in r["bm25"]], [(d, float(s)) for d, s in r.get("dense", [])])
            for r in raw["queries"]
        ]
        return Bundle(raw["meta"], raw["docs"], queries)
    except (KeyError, TypeError, OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a cross-encoder bundle ({exc}): mine one with "
                         f"`python -m training cross-encoder mine`") from exc


def merge_bundles(bundles: list[Bundle]) -> Bundle:
    """One training bundle from several collections (multi-domain training).

    Query and document ids are prefixed with each bundle's dataset name (``scifact/123``) so
    that collections never collide; roles (train/dev) are kept, so the dev set is the union of
    every collection's dev queries. A single bundle is returned unchanged.
    """
    if len(bundles) == 1:
        return bundles[0]
    names = [str(b.meta.get("dataset", f"bundle{i}")) for i, b in enumerate(bundles)]
    if len(set(names)) != len(names):
        raise ValueError(f"cannot merge bundles of the same dataset twice: {names}")
    docs: dict[str, str] = {}
    queries: list[BundleQuery] = []
    for name, b in zip(names, bundles, strict=True):
        docs.update({f"{name}/{d}": text for d, text in b.docs.items()})
        for q in b.queries:
            queries.append(BundleQuery(f"{name}/{q.qid}", q.text, q.role, {f"{name}/{d}": r for d, r in q.qrels.items()},
                                       [(f"{name}/{d}", s) for d, s in q.bm25], [(f"{name}/{d}", s) for d, s in q.dense]))
    meta = {"dataset": "+".join(names), "parts": [b.meta for b in bundles],
            "dev_queries": sum(int(b.meta.get("dev_queries") or 0) for b in bundles), "seed": bundles[0].meta.get("seed")}
    return Bundle(meta, docs, queries)


def repeat_train(bundle: Bundle, times: int) -> Bundle:
    """``bundle`` with each train query counted ``times`` per epoch (copies ``<qid>#r<i>``; dev kept once).

    Up-weights a small set of human labels against a large pseudo-labelled one in multi-domain training.
    """
    if times < 1:
        raise ValueError(f"repeat count must be >= 1, got {times}")
    copies = [BundleQuery(f"{q.qid}#r{i}", q.text, q.role, q.qrels, q.bm25, q.dense)
              for i in range(1, times) for q in bundle.queries if q.role == "train"]
    return Bundle({**bundle.meta, "repeat": times}, bundle.docs, bundle.queries + copies)


def fused(q: BundleQuery, depth: int = 100, k: int = 60) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion of the BM25 and dense lists (a hybrid first stage for reports)."""
    scores: dict[str, float] = {}
    for ranking in (q.bm25, q.dense):
        for rank, (doc, _) in enumerate(ranking, 1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]


def zscore_hybrid(q: BundleQuery, depth: int = 100, bm25_weight: float = 0.6) -> list[tuple[str, float]]:
    """The shipped ``hybrid`` first stage from a bundle's lists: BM25 and dense top-``depth`` each, z-score
    linear fusion ``bm25_weight`` / ``1 - bm25_weight`` (the serving stage's own function), best ``depth``."""
    from pipeline.core.score_fusion import linear_fusion

    fusedscores = linear_fusion([q.bm25[:depth], q.dense[:depth]], [bm25_weight, 1.0 - bm25_weight], "zscore")
    return sorted(fusedscores.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
