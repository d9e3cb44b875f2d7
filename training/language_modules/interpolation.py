"""Tune ``modular_ce``'s ``interpolate`` (alpha) on a dev split of the TRAINING articles, then apply it to the held-out run.

``python -m training.language_modules.interpolation dev --data ../shared/data/xquad-r --out runs/xquad/dev.json``
  first stages (BM25 + e5, RRF k=60, depth 30) of ``--dev`` questions per language sampled from the
  training articles (``random.Random(seed)`` over the sorted training question ids; the same ids in every
  language), reranked on the CPU with base + ranking + language module of each family.
``python -m training.language_modules.interpolation tune --dev runs/xquad/dev.json --data ../shared/data/xquad-r
--candidates runs/xquad/candidates.json --rerank OUT/rerank.json``
  grid alpha = 0, 0.05 .. 1 on dev (per language and family, and one per family over all languages;
  ties go to the smaller alpha), then scores the held-out runs once with the dev alphas.

Caveat: the modules were trained on every training-article question, so dev reranker scores are
in-sample (the dev nDCG of the reranker alone is printed next to its held-out nDCG to show the gap).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

from training.language_modules.xquad import LANGUAGES, load_language, question_split

logger = logging.getLogger(__name__)
GRID = [round(i * 0.05, 2) for i in range(21)]
KINDS = ("lora", "sftm")
SYSTEMS = ("lora:module", "sftm:module", "base")


def dev_questions(data, n: int, heldout_share: float, seed: int) -> list[str]:
    train, _ = question_split(data, heldout_share, seed)
    return sorted(random.Random(seed).sample(sorted(train), min(n, len(train))))


def build_dev(args) -> dict:
    import torch

    from pipeline.core.settings_paths import default_index_root
    from pipeline.core.types import Hit, Query
    from pipeline.scorers.language_modules import ModuleRegistry, load_module
    from pipeline.scorers.modular import ModularScorer, load_base
    from training.language_modules.candidates import bm25_runs, dense_runs, rrf
    from training.language_modules.evaluate import rerank_texts

    torch.set_num_threads(args.threads)
    index_root = args.index_root or default_index_root()
    model, tokenizer, _ = load_base(args.base, Path("models"), "cpu")
    registry = ModuleRegistry(model)
    langs = args.langs.split(",")
    systems = args.systems.split(",")
    for kind in KINDS:
        if f"{kind}:module" in systems:
            for name in ["ranking", *langs]:
                registry.add(load_module(args.modules / kind / name, f"{kind}/{name}"))
    out: dict = {"depth": args.depth, "seed": args.seed, "n": args.dev, "languages": {}}
    for lang in langs:
        data = load_language(args.data, lang)
        qids = dev_questions(data, args.dev, args.heldout_share, args.seed)
        questions = {q: data.questions[q] for q in qids}
        bm25 = bm25_runs(args.data / lang, lang, questions, index_root, 100)
        dense = dense_runs(data.sentences, questions, args.cache / f"e5-{lang}-{len(data.sentences)}.npy", 100)
        fusion = {q: rrf([[d for d, _ in bm25.get(q, [])], [d for d, _ in dense[q]]])[: args.depth] for q in qids}
        hits = {q: [Hit(q, d, s) for d, s in fusion[q]] for q in qids}
        entry = {"qrels": {q: {data.answer[q]: 1} for q in qids},
                 "bm25": {q: dict(bm25.get(q, [])) for q in qids},
                 "fusion": {q: dict(fusion[q]) for q in qids}, "rerank": {}}
        for system in systems:
            kind = system.split(":")[0] if system != "base" else "lora"
            modules = {lang: [f"{kind}/ranking", f"{kind}/{lang}"]} if system != "base" else {}
            scorer = ModularScorer(registry, tokenizer, modules, kind=kind, detector=None, max_length=256, batch_size=64)
            queries = [Query(q, questions[q], lang) for q in qids]
            entry["rerank"][system] = rerank_texts(scorer, queries, hits, data.sentences)
            logger.info("%s %s: %d dev questions reranked", lang, system, len(qids))
        out["languages"][lang] = entry
    return out


def mix(rerank: dict, first: dict, alpha: float) -> dict:
    """Per query: ``alpha * minmax(rerank) + (1 - alpha) * minmax(first)`` over the reranked documents."""
    from pipeline.core.score_fusion import interpolate_scores

    run = {}
    for q, docs in rerank.items():
        ids = sorted(docs)
        first_q = first.get(q, {})
        floor = min(first_q.values()) if first_q else 0.0
        run[q] = dict(zip(ids, interpolate_scores([docs[d] for d in ids], [first_q.get(d, floor) for d in ids], alpha),
                          strict=True))
    return run


def ndcg(qrels: dict, run: dict) -> float:
    from eval.metrics import evaluate

    return evaluate(qrels, run)["nDCG@10"]


def best(curve: dict[float, float]) -> float:
    top = max(curve.values())
    return min(a for a, v in curve.items() if v >= top - 1e-9)


def tune(args) -> dict:
    dev = json.loads(args.dev[0].read_text())
    for extra in args.dev[1:]:  # e.g. a second run with --systems base
        for lang, entry in json.loads(extra.read_text())["languages"].items():
            dev["languages"][lang]["rerank"].update(entry["rerank"])
    bundle = json.loads(args.candidates.read_text())
    heldout = json.loads(args.rerank.read_text())
    langs = list(dev["languages"])
    systems = [s for s in SYSTEMS if all(s in dev["languages"][lang]["rerank"] for lang in langs)]
    report: dict = {"grid": GRID, "systems": systems, "languages": {}, "pooled": {}}
    curves: dict = {}
    for lang, entry in dev["languages"].items():
        for system in systems:
            rr = entry["rerank"][system]
            curves[(lang, system)] = {a: ndcg(entry["qrels"], mix(rr, entry["fusion"], a)) for a in GRID}
    for system in systems:
        pooled = {a: sum(curves[(lang, system)][a] for lang in langs) / len(langs) for a in GRID}
        report["pooled"][system] = {"alpha": best(pooled), "dev_curve": pooled}
    for lang, entry in dev["languages"].items():
        held = bundle["languages"][lang]
        qrels, first = held["qrels"], held["first_stage_runs"]["fusion"]
        row = {"dev_bm25": ndcg(entry["qrels"], entry["bm25"]), "dev_fusion": ndcg(entry["qrels"], entry["fusion"]),
               "bm25": held["metrics"]["bm25"]["nDCG@10"], "fusion": held["metrics"]["fusion"]["nDCG@10"]}
        for system in systems:
            curve = curves[(lang, system)]
            rr = heldout["runs"][lang]["fusion"][system]
            alpha, pooled = best(curve), report["pooled"][system]["alpha"]
            row[system] = {"alpha": alpha, "dev_curve": curve, "dev_rerank_only": curve[1.0],
                           "rerank_only": ndcg(qrels, rr), "interpolated": ndcg(qrels, mix(rr, first, alpha)),
                           "pooled_alpha": pooled, "interpolated_pooled": ndcg(qrels, mix(rr, first, pooled)),
                           "heldout_curve": {a: ndcg(qrels, mix(rr, first, a)) for a in GRID}}
        report["languages"][lang] = row
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dev")
    d.add_argument("--data", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--modules", type=Path, default=Path("models/lang-modules"))
    d.add_argument("--base", default="ce-minilm")
    d.add_argument("--langs", default=",".join(LANGUAGES))
    d.add_argument("--dev", type=int, default=100, help="dev questions per language (training articles)")
    d.add_argument("--depth", type=int, default=30)
    d.add_argument("--heldout-share", type=float, default=1 / 3)
    d.add_argument("--seed", type=int, default=13)
    d.add_argument("--index-root", type=Path)
    d.add_argument("--cache", type=Path, default=Path("runs/xquad"), help="folder of the e5 corpus vectors")
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--systems", default="lora:module,sftm:module", help="rerankers to score (also: base = no module)")
    t = sub.add_parser("tune")
    t.add_argument("--dev", type=Path, nargs="+", required=True)
    t.add_argument("--candidates", type=Path, required=True)
    t.add_argument("--rerank", type=Path, required=True, help="held-out reranked runs (evaluate.py / job.py)")
    t.add_argument("--out", type=Path, help="write the report (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "dev":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(build_dev(args)))
        return 0
    report = tune(args)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    systems = report["systems"]
    print("lang\tbm25\tfusion\tdev bm25\tdev fusion\t" + "\t".join(
        f"{k} alpha\t{k} dev rr\t{k} rr\t{k} interp\t{k} interp(pooled)" for k in systems))
    for lang, row in report["languages"].items():
        cells = [f"{row[k]:.4f}" for k in ("bm25", "fusion", "dev_bm25", "dev_fusion")]
        for k in systems:
            r = row[k]
            cells += [f"{r['alpha']:.2f}", f"{r['dev_rerank_only']:.4f}", f"{r['rerank_only']:.4f}",
                      f"{r['interpolated']:.4f}", f"{r['interpolated_pooled']:.4f}"]
        print(lang + "\t" + "\t".join(cells))
    for k in systems:
        print(f"pooled dev alpha {k}: {report['pooled'][k]['alpha']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
