"""``python -m training mamba``: a Mamba bi-encoder distilled from MiniLM, then fine-tuned contrastively.

Stage ``distill`` builds a fresh ``MambaModel`` (MiniLM's tokenizer and word embeddings) and
regresses its mean-pooled output onto the MiniLM teacher's embeddings of corpus text: whole
documents plus single sentences, so both document-length and query-length inputs are seen.
Stage ``finetune`` continues with multiple-negatives ranking on SciFact train pairs with mined
hard negatives (the same task as ``python -m training dense --task supervised``).

Examples::

    python -m training mamba --stage distill --teacher minilm --corpus scifact --corpus cranfield \\
        --out models/mamba-distilled --eval scifact:test --eval cranfield:test
    python -m training mamba --stage finetune --init models/mamba-distilled --train scifact \\
        --out models/mamba-ft --eval scifact:test --eval cranfield:test

Only the pure-PyTorch path is used unless ``mamba-ssm`` / ``causal-conv1d`` are installed (their
wheels are not on PyPI for this torch); ``mambapy`` (train extra) supplies a parallel scan.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.storage.collection import iter_corpus
from training.dense import cli as dense_cli
from training.dense import options
from training.dense.card import canonical_argv, remember_parser, write_card
from training.dense.contrastive import seed_everything, train_distillation
from training.dense.encoding import module_encoder
from training.dense.pretraining_tasks import document_sentences
from training.dense.retrieval_eval import doc_text

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", choices=["distill", "finetune"], required=True)
    parser.add_argument("--teacher", default="minilm", help="distill: 'minilm' or a sentence-transformers folder")
    parser.add_argument("--corpus", action="append", default=[], help="distill: corpus under --data-dir (repeatable)")
    parser.add_argument("--sentences-per-doc", type=int, default=2, help="distill: single sentences per document")
    parser.add_argument("--hidden-size", type=int, default=384, help="distill: must equal the teacher's dimension")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--state-size", type=int, default=16)
    parser.add_argument("--init", default=None, help="finetune: the distilled Mamba folder")
    parser.add_argument("--train", default="scifact", help="finetune: collection whose train qrels are used")
    parser.add_argument("--hard-negatives", type=int, default=1)
    remember_parser(parser)
    options.add_common(parser, default_lr=1e-3)


def distillation_texts(args: argparse.Namespace) -> list[str]:
    """Documents (title + text) and ``--sentences-per-doc`` random sentences of each, from every ``--corpus``."""
    rng = random.Random(args.seed)
    texts: list[str] = []
    for name in args.corpus:
        for doc in iter_corpus(options.collection_dir(options.data_dir(args), name)):
            texts.append(doc_text(doc))
            sentences = document_sentences(doc)
            texts += rng.sample(sentences, min(args.sentences_per_doc, len(sentences)))
    return texts


def run_distill(args: argparse.Namespace, argv: list[str]) -> dict:
    from pipeline.encoders.mamba import new_mamba_module, parallel_scan_available

    if not args.corpus:
        raise PipelineError("--stage distill needs at least one --corpus")
    cfg = options.train_config(args)
    device = options.device_of(args)
    teacher, _, _ = options.load_trainable(args.teacher)
    texts = distillation_texts(args)
    targets = module_encoder(teacher, device, cfg.doc_max_length)(texts)
    if targets.shape[1] != args.hidden_size:
        raise PipelineError(f"--hidden-size {args.hidden_size} must equal the teacher's dimension {targets.shape[1]}")
    embeddings = teacher.st[0].auto_model.get_input_embeddings().weight.detach().float().cpu()
    tokenizer_dir = Path(teacher.st.tokenizer.name_or_path)
    del teacher
    student = new_mamba_module(tokenizer_dir, args.hidden_size, args.layers, args.state_size, embeddings)
    stats = train_distillation(student, texts, targets, cfg, device).summary()
    metrics = dense_cli.evaluate(args, student, cfg, device, Path(args.out).name if args.out else "mamba-distill")
    if args.out:
        student.save(Path(args.out), {"query_max_length": cfg.query_max_length, "doc_max_length": cfg.doc_max_length})
        write_card(Path(args.out), job="mamba", argv=argv, title="Mamba bi-encoder distilled from MiniLM",
                   data={"corpora": args.corpus, "texts": len(texts), "teacher": args.teacher, "qrels_used": "none"},
                   training={"config": cfg.__dict__, "stats": stats, "device": device,
                             "architecture": {"hidden_size": args.hidden_size, "layers": args.layers,
                                              "state_size": args.state_size},
                             "scan": "mambapy parallel scan" if parallel_scan_available() else "sequential loop"},
                   metrics=metrics, weights_sha256=options.save_weights_checksum(Path(args.out)))
    return {"metrics": metrics, "stats": stats, "data": {"texts": len(texts)},
            "teacher_norm": float(np.linalg.norm(targets, axis=1).mean())}


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    argv = canonical_argv(args) if argv is None else argv
    try:
        seed_everything(args.seed)
        if args.stage == "distill":
            args.result = run_distill(args, argv)
        else:
            if not args.init:
                raise PipelineError("--stage finetune needs --init (a distilled Mamba folder)")
            args.task = "supervised"
            return dense_cli.run(args, argv, job="mamba")
        for name, m in args.result["metrics"].items():
            print(f"mamba-{args.stage}\t{name}\tnDCG@10 {m['nDCG@10']:.4f}\tR@100 {m['R@100']:.4f}")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
