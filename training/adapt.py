"""``python -m training adapt``: adapt the reranker to YOUR collection, without any qrels (GPL-style).

    python -m training adapt --dataset DIR --out models/ce-minilm-mycorpus          # all phases
    python -m training adapt --dataset DIR --out ... --phases queries,mine          # the CPU part (Java for BM25)
    python -m training adapt --dataset DIR --out ... --phases dense,train --device cuda   # then the GPU part

Phases, each written under ``--work`` (default ``.cache/adapt/<collection>``) and skipped when its
output is already there with the same settings (so an interrupted run resumes, and a re-run
is safe; ``--force`` redoes them):

1. ``queries``: pseudo-queries from the corpus itself: each document's title asks for its own
   body (:mod:`training.cross_encoder.data.pseudo_queries`); a seeded sample of ``--max-queries``.
2. ``mine``: BM25 top-100 of every pseudo-query over the title-less corpus (a private Lucene
   index under the work folder), 5% (at most 50) held out as a pseudo dev set.
3. ``dense``: all-MiniLM-L6-v2 top-100 of every query (seconds on a GPU, minutes on a CPU).
4. ``train``: continue training the base reranker (``--base``, default ``models/ce-minilm``) on
   those groups: the source document is the positive, hard negatives from BM25 and dense, plus
   the zero-shot hybrid as a soft teacher (KL); low learning rate, one epoch; the epoch is kept
   only if it ranks the pseudo dev set better than the base did. Writes a model folder with its
   card (base, data, settings, dev before / after).

The adapted folder serves like the shipped one: point a pipeline's ``model`` at it (see
``configs/pipelines.yaml``, ``hybrid>>ce``). Nothing here reads qrels of the target collection;
``--extra-eval`` bundles (e.g. a test split you do have) are only reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

PHASES = ("queries", "mine", "dense", "train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--dataset", type=Path, help="BEIR-layout folder (corpus.jsonl with titles); "
                                                     "needed by the queries and mine phases")
    parser.add_argument("--out", type=Path, required=True, help="adapted model folder to write")
    parser.add_argument("--base", type=Path, default=Path("models/ce-minilm"), help="reranker to start from")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default .cache/adapt/<collection>)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--force", action="store_true", help="redo phases whose output exists")
    parser.add_argument("--max-queries", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--negatives", type=int, default=15)
    parser.add_argument("--groups-per-batch", type=int, default=16)
    parser.add_argument("--teacher", default="hybrid", choices=["none", "hybrid"])
    parser.add_argument("--dense-model", type=Path, default=None, help="MiniLM folder (default: the packaged one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--extra-eval", type=Path, nargs="*", default=[], help="eval bundles to report (never to choose)")
    parser.add_argument("--dump-scores", type=Path, default=None, help="raw scores of the extra evals (JSON per run)")
    parser.add_argument("--code-commit", default="unknown")


def run(args: argparse.Namespace) -> int:
    try:
        phases = [p.strip() for p in args.phases.split(",") if p.strip()]
        unknown = sorted(set(phases) - set(PHASES))
        if unknown:
            raise ValueError(f"unknown phases {unknown} (known: {', '.join(PHASES)})")
        work = args.work or Path(".cache/adapt") / _collection(args)
        work.mkdir(parents=True, exist_ok=True)
        for phase in PHASES:
            if phase in phases:
                started = time.perf_counter()
                did = PHASE_RUNNERS[phase](args, work)
                logger.info("phase %s: %s (%.0f s)", phase, "done" if did else "already done, skipped",
                            time.perf_counter() - started)
        return 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _collection(args) -> str:
    if args.dataset is None:
        raise ValueError("--dataset is needed to name the work folder (or give --work)")
    from pipeline.storage.collection import dataset_name

    return dataset_name(args.dataset)


def _queries(args, work: Path) -> bool:
    from training.cross_encoder.data.pseudo_queries import write_title_dataset

    marker = work / "pseudo" / "pseudo.json"
    want = {"max_queries": args.max_queries, "seed": args.seed, "dataset": str(args.dataset)}
    if marker.is_file() and not args.force and json.loads(marker.read_text()).get("settings") == want:
        return False
    if args.dataset is None:
        raise ValueError("the queries phase needs --dataset")
    info = write_title_dataset(args.dataset, work / "pseudo", args.max_queries, args.seed)
    marker.write_text(json.dumps({**info, "settings": want}, indent=2))
    return True


def _mine(args, work: Path) -> bool:
    from training.cross_encoder.data.mining import mine

    bundle = work / "bundle" / "train.json.gz"
    if bundle.is_file() and not args.force:
        return False
    pseudo = work / "pseudo"
    if not (pseudo / "qrels" / "train.tsv").is_file():
        raise FileNotFoundError(f"no pseudo-queries in {pseudo}: run the queries phase first")
    n = sum(1 for _ in open(pseudo / "qrels" / "train.tsv")) - 1
    mine(pseudo, work / "bundle", work / "indexes", "train", [], max(1, min(50, n // 20)), args.seed, 100)
    return True


def _dense(args, work: Path) -> bool:
    from training.cross_encoder.data.bundle import load_bundle
    from training.cross_encoder.data.mining import add_dense

    bundle = work / "bundle" / "train.json.gz"
    if not bundle.is_file():
        raise FileNotFoundError(f"no bundle at {bundle}: run the mine phase first")
    if load_bundle(bundle).meta.get("dense") and not args.force:
        return False
    add_dense([bundle], args.dense_model, None if args.device == "auto" else args.device)
    return True


def _train(args, work: Path) -> bool:
    from pipeline.scorers.cross_encoder_folder import read_module, write_module
    from training.cross_encoder.data.bundle import load_bundle
    from training.cross_encoder.model_card import write_model_card
    from training.cross_encoder.trainer import TrainConfig, evaluate_report, resolve_device, train

    bundle = load_bundle(work / "bundle" / "train.json.gz")
    if not bundle.meta.get("dense"):
        raise ValueError("the bundle has no dense lists: run the dense phase first")
    if not (args.base / "2_Dense" / "model.safetensors").is_file():
        raise FileNotFoundError(f"{args.base} is not a cross-encoder folder")
    cfg = TrainConfig(init_model=str(args.base), teacher=args.teacher, retrievers=("bm25", "dense"), curriculum=False,
                      epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, negatives=args.negatives,
                      groups_per_batch=args.groups_per_batch, seed=args.seed, device=args.device, patience=1)
    base_dev = _base_dev(cfg, bundle)
    result = train(cfg, bundle)
    keep = result.best_dev >= base_dev
    logger.info("pseudo dev nDCG@10: base %.4f, adapted %.4f -> %s", base_dev, result.best_dev,
                "adapted model kept" if keep else "no gain: the base model is written unchanged")
    if not keep:
        result.module, result.tokenizer = read_module(args.base)
    write_module(result.module, result.tokenizer, args.out)
    evals = {}
    if args.extra_eval:
        from training.cross_encoder.ablation import first_stages
        from training.cross_encoder.trainer import TrainResult

        base = TrainResult(*read_module(args.base))
        base.module.to(resolve_device(args.device))
        for path in args.extra_eval:  # the adapted model and, for comparison, the base on the same runs
            extra = load_bundle(path)
            name = str(extra.meta.get("dataset", path.stem))
            for tag, model in (("adapted", result), ("base", base)):
                dump = args.dump_scores / f"{tag}--{name}.json" if args.dump_scores else None
                scores = evaluate_report(model, cfg, extra, first_stages(extra), dump=dump)
                evals.update({f"{name}:{k}" if tag == "adapted" else f"base {name}:{k}": v for k, v in scores.items()})
    row = {"name": "adapted" if keep else "base (adaptation did not help on pseudo dev)", "config": cfg.to_dict(),
           "dev_ndcg10": result.best_dev if keep else base_dev, "dev_history": result.dev_history,
           "best_epoch": result.best_epoch, "steps": result.steps, "seconds": result.seconds, "test": evals}
    report = {"variants": [row], "chosen": row, "adaptation": {"base": str(args.base), "base_pseudo_dev": base_dev,
              "adapted_pseudo_dev": result.best_dev, "kept": keep, "work": str(work)},
              "command": "python -m training " + shlex.join(sys.argv[1:]), "code_commit": args.code_commit,
              "device": resolve_device(args.device), "data": bundle.meta}
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2))
    write_model_card(args.out, report)
    return True


def _base_dev(cfg, bundle) -> float:
    """The base reranker's nDCG@10 on the pseudo dev queries (BM25 top-100), the bar the adapted one must pass."""
    from pipeline.scorers.cross_encoder_folder import read_module
    from training.cross_encoder.trainer import TokenCache, rerank_ndcg, resolve_device

    device = resolve_device(cfg.device)
    module, tokenizer = read_module(cfg.init_model)
    module.to(device)
    dev = bundle.role("dev")
    texts = [q.text for q in dev] + sorted({bundle.docs[d] for q in dev for d, _ in q.bm25[:100]})
    cache = TokenCache(tokenizer, texts, cfg.max_length)
    return rerank_ndcg(module, cache, bundle.docs, dev, {q.qid: q.bm25 for q in dev}, cfg, device, 100)


PHASE_RUNNERS = {"queries": _queries, "mine": _mine, "dense": _dense, "train": _train}
