"""``python -m training dense``: ICT / BFS pretraining and supervised fine-tuning of a bi-encoder.

Examples::

    # Inverse Cloze Task on two corpora (no qrels), then evaluate
    python -m training dense --task ict --corpus scifact --corpus cranfield --init minilm \\
        --out models/minilm-ict --eval scifact:test --eval cranfield:test
    # supervised on SciFact train (dev carved off) with hard negatives mined by the model itself
    python -m training dense --task supervised --train scifact --init models/minilm-ict \\
        --out models/minilm-ict-sup --eval scifact:dev --eval scifact:test
    # zero-shot evaluation only
    python -m training dense --task none --init minilm --eval scifact:test

``--task ict+bfs`` mixes both pretraining tasks. ``--init`` also takes a Mamba folder
(``python -m training mamba`` fine-tunes through this job).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.storage.collection import iter_corpus, load_qrels
from training.dense import options
from training.dense.card import canonical_argv, remember_parser, write_card
from training.dense.contrastive import TrainConfig, seed_everything, train_contrastive
from training.dense.encoding import query_and_document_encoders
from training.dense.examples import Example
from training.dense.pretraining_tasks import pretraining_examples
from training.dense.retrieval_eval import evaluate_sets
from training.dense.supervised import carve_dev, load_supervised, mine_hard_negatives, qrels_examples

logger = logging.getLogger(__name__)
TASKS = ("none", "ict", "bfs", "ict+bfs", "supervised")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--init", default="minilm", help="'minilm', a sentence-transformers folder or a Mamba folder")
    parser.add_argument("--corpus", action="append", default=[], help="pretraining corpus under --data-dir (repeatable)")
    parser.add_argument("--pairs-per-doc", type=int, default=1, help="pretraining pairs per document and task")
    parser.add_argument("--train", default="scifact", help="collection whose train qrels the supervised task uses")
    parser.add_argument("--hard-negatives", type=int, default=1, help="mined hard negatives per supervised pair")
    remember_parser(parser)
    options.add_common(parser)


def build_examples(args: argparse.Namespace, module: Any, cfg: TrainConfig, device: str) -> tuple[list[Example], dict]:
    """The task's training pairs and a description of the data for the card."""
    root = options.data_dir(args)
    rng = random.Random(args.seed)
    if args.task in ("ict", "bfs", "ict+bfs"):
        if not args.corpus:
            raise PipelineError(f"--task {args.task} needs at least one --corpus")
        examples: list[Example] = []
        for name in args.corpus:
            docs = list(iter_corpus(options.collection_dir(root, name)))
            examples += pretraining_examples(args.task.split("+"), docs, rng, per_doc=args.pairs_per_doc)
        return examples, {"task": args.task, "corpora": args.corpus, "pairs": len(examples), "qrels_used": "none"}
    folder = options.collection_dir(root, args.train)
    train_ids, dev_ids = carve_dev(load_qrels(folder, "train"), options.DEV_FRACTION, args.split_seed)
    queries, qrels, texts = load_supervised(folder, "train", set(train_ids))
    negatives = None
    if args.hard_negatives > 0:
        enc_q, enc_d = query_and_document_encoders(module, device, cfg.query_max_length, cfg.doc_max_length)
        doc_ids = list(texts)
        positives = {q: {d for d, r in rels.items() if r > 0} for q, rels in qrels.items()}
        negatives = mine_hard_negatives(enc_q, enc_d, queries, doc_ids, [texts[d] for d in doc_ids], positives,
                                        device=device)
    examples = qrels_examples(queries, qrels, texts, negatives, rng, n_negatives=args.hard_negatives)
    return examples, {"task": "supervised", "collection": args.train, "split": "train minus dev",
                      "train_queries": len(train_ids), "dev_queries": len(dev_ids), "pairs": len(examples),
                      "hard_negatives": f"{args.hard_negatives} per pair, mined by the initial model (ranks 3-30)"}


def evaluate(args: argparse.Namespace, module: Any, cfg: TrainConfig, device: str, tag: str) -> dict:
    if not args.eval:
        return {}
    sets = options.eval_sets(options.data_dir(args), args.eval, args.split_seed)
    enc_q, enc_d = query_and_document_encoders(module, device, cfg.query_max_length, cfg.doc_max_length)
    return evaluate_sets(enc_q, enc_d, sets, device, args.runs_dir, tag)


def run(args: argparse.Namespace, argv: list[str] | None = None, job: str = "dense") -> int:
    """Train (unless ``--task none``), evaluate, save with a card; ``args.result`` gets the numbers."""
    argv = canonical_argv(args) if argv is None else argv
    try:
        cfg = options.train_config(args)
        device = options.device_of(args)
        seed_everything(args.seed)
        module, kind, save = options.load_trainable(args.init)
        stats_summary: dict = {}
        data: dict = {"task": "none"}
        if args.task != "none":
            examples, data = build_examples(args, module, cfg, device)
            stats = train_contrastive(module, examples, cfg, device)
            stats_summary = stats.summary()
            logger.info("trained %s: %s", args.task, stats_summary)
        tag = Path(args.out).name if args.out else f"{args.task}-{Path(str(args.init)).name}"
        metrics = evaluate(args, module, cfg, device, tag)
        for name, m in metrics.items():
            print(f"{tag}\t{name}\tnDCG@10 {m['nDCG@10']:.4f}\tR@100 {m['R@100']:.4f}")
        if args.out:
            save(Path(args.out))
            write_card(Path(args.out), job=job, argv=argv, title=f"{kind} bi-encoder, task {args.task}",
                       data={**data, "init": str(args.init)},
                       training={"config": cfg.__dict__, "stats": stats_summary, "device": device},
                       metrics=metrics, weights_sha256=options.save_weights_checksum(Path(args.out)))
        args.result = {"metrics": metrics, "stats": stats_summary, "data": data}
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
