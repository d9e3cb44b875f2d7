"""Rerank held-out XQuAD-R candidates with the base reranker, + adapter and + SFTM, and score them.

``python -m training.language_modules.evaluate --data ../shared/data/xquad-r --candidates runs/xquad/candidates.json
--modules models/lang-modules --out runs/xquad/rerank.json``

Scoring goes through :class:`~pipeline.scorers.modular.ModularScorer` itself (the served scorer): for
each module family (``lora``, ``sftm``) the *base reranker* is base + that family's ranking module
(what a query of an unsupported language gets), and *+ module* adds the query language's module.
With ``--score`` (or when ir-measures is importable) nDCG@10 etc. are computed per language.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from training.language_modules.xquad import load_language

logger = logging.getLogger(__name__)
KINDS = ("lora", "sftm")


def rerank(args) -> dict:
    import torch

    from pipeline.core.types import Hit, Query
    from pipeline.scorers.language_modules import ModuleRegistry, load_module
    from pipeline.scorers.modular import ModularScorer, load_base

    bundle = json.loads(args.candidates.read_text())
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, identity = load_base(args.base, Path("models"), device, folder=args.base_folder)
    registry = ModuleRegistry(model)
    langs = [x for x in args.langs.split(",") if x in bundle["languages"]]
    kinds = args.kinds.split(",")
    for kind in kinds:
        for name in ["ranking", *langs]:
            folder = args.modules / kind / name
            if folder.is_dir():
                registry.add(load_module(folder, f"{kind}/{name}"))
    runs: dict = {}
    for lang in langs:
        data = load_language(args.data, lang)
        entry = bundle["languages"][lang]
        runs[lang] = {}
        for first in args.first_stages.split(","):
            cands = entry["first_stage"][first]
            hits = {q: [Hit(q, d, 0.0) for d in docs[: args.depth]] for q, docs in cands.items()}
            for kind in kinds:
                if f"{kind}/ranking" not in registry:
                    continue
                modules = {lang: [f"{kind}/ranking", f"{kind}/{lang}"]} if f"{kind}/{lang}" in registry else {}
                systems = [(f"{kind}:ranking", [f"{kind}/ranking"], False), (f"{kind}:module", [f"{kind}/ranking"], True)]
                if kind == kinds[0]:
                    systems.insert(0, ("base", [], False))
                for key, fallback, with_lang in systems:
                    if with_lang and not modules:
                        continue
                    scorer = ModularScorer(registry, tokenizer, modules, fallback=fallback, kind=kind, detector=None,
                                           max_length=args.max_length, batch_size=args.batch_size)
                    queries = [Query(q, t, lang if with_lang else None) for q, t in entry["questions"].items()]
                    queries = queries[: args.limit] if args.limit else queries
                    start = time.perf_counter()
                    runs[lang].setdefault(first, {})[key] = rerank_texts(scorer, queries, hits, data.sentences)
                    logger.info("%s %s %s: %d queries in %.1fs", lang, first, key, len(queries), time.perf_counter() - start)
    return {"base": args.base, "base_sha256": identity, "device": device, "depth": args.depth, "runs": runs}


def rerank_texts(scorer, queries: list, hits: dict, sentences: dict[str, str]) -> dict[str, dict[str, float]]:
    """``query -> {doc: score}`` of each query's candidates, scored by ``scorer`` over their sentences."""
    rows = scorer.score_batch(queries, [[sentences.get(h.doc_id, "") for h in hits.get(q.query_id, [])] for q in queries])
    return {q.query_id: {h.doc_id: s for h, s in zip(hits.get(q.query_id, []), row, strict=True)}
            for q, row in zip(queries, rows, strict=True)}


def score(bundle: dict, reranked: dict) -> dict:
    """``lang -> {system: nDCG@10...}`` for BM25, the fusion, and every reranked run."""
    from eval.metrics import evaluate

    table: dict = {}
    for lang, entry in bundle["languages"].items():
        if lang not in reranked["runs"]:
            continue
        qrels = entry["qrels"]
        rows = {name: entry["metrics"][name] for name in ("bm25", "dense", "fusion")}
        for first, configs in reranked["runs"][lang].items():
            for key, run in configs.items():
                rows[f"{first}>>{key}"] = evaluate(qrels, run)
        table[lang] = rows
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--candidates", type=Path, required=True)
    parser.add_argument("--modules", type=Path, default=Path("models/lang-modules"))
    parser.add_argument("--base", default="ce-minilm")
    parser.add_argument("--base-folder", type=Path)
    parser.add_argument("--langs", default="en,de,es,ar,zh,ru")
    parser.add_argument("--first-stages", default="fusion")
    parser.add_argument("--kinds", default=",".join(KINDS), help="module families to evaluate")
    parser.add_argument("--limit", type=int, default=0, help="at most this many questions per language (smoke tests)")
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device")
    parser.add_argument("--out", type=Path, required=True, help="reranked runs (JSON)")
    parser.add_argument("--score", action="store_true", help="only score an existing --out against the candidates' qrels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.score:
        reranked = rerank(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reranked))
    try:
        import ir_measures  # noqa: F401
    except ImportError:
        logger.info("ir-measures is not installed here: score later with --score")
        return 0
    table = score(json.loads(args.candidates.read_text()), json.loads(args.out.read_text()))
    for lang, rows in table.items():
        for system, metrics in rows.items():
            print(f"{lang}\t{system}\tnDCG@10={metrics['nDCG@10']:.4f}\tRR@10={metrics['RR@10']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
