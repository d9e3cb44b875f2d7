"""``python -m training moe``: one domain-routed MoE bi-encoder vs one fine-tuned model per domain.

The domains and their training data (never a test qrel):

- ``scifact``: SciFact train qrels minus the dev slice, one hard negative mined by MiniLM;
- ``cranfield``: ICT + BFS pairs from the Cranfield corpus (it has no train split);
- ``xquad-r-en``: XQuAD-R English questions of the train half of the articles (held-out
  articles are the evaluation), one mined hard negative.

Evaluation per domain: SciFact test, Cranfield (all 225 queries), XQuAD-R en held-out articles.

Examples::

    python -m training moe --mode moe --init minilm --out models/moe-minilm
    python -m training moe --mode separate --init minilm --out models/separate-minilm

``--mode separate`` trains one MiniLM per domain on exactly that domain's pairs, with the same
epochs: the pair of runs compares one model serving N domains with N models.
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
from training.dense.supervised import carve_dev, load_supervised, mine_hard_negatives, qrels_examples, split_by_article

logger = logging.getLogger(__name__)

# domain -> (collection under the data dir, evaluation spec)
DOMAINS = {
    "scifact": ("scifact", "scifact:test"),
    "cranfield": ("cranfield", "cranfield:test"),
    "xquad-r-en": ("xquad-r/en", "xquad-r/en:heldout"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=["moe", "separate"], required=True)
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    parser.add_argument("--init", default="minilm", help="'minilm' or a sentence-transformers (BERT) folder")
    parser.add_argument("--moe-layers", type=int, nargs="*", default=None, help="layers with experts (default: all)")
    parser.add_argument("--pairs-per-doc", type=int, default=1, help="ICT/BFS pairs per Cranfield document and task")
    remember_parser(parser)
    options.add_common(parser)


def _mined_examples(base: Any, folder: Path, split: str, qids: set[str], domain: str, cfg: TrainConfig,
                    device: str, rng: random.Random) -> list[Example]:
    queries, qrels, texts = load_supervised(folder, split, qids)
    enc_q, enc_d = query_and_document_encoders(base, device, cfg.query_max_length, cfg.doc_max_length)
    doc_ids = list(texts)
    positives = {q: {d for d, r in rels.items() if r > 0} for q, rels in qrels.items()}
    negatives = mine_hard_negatives(enc_q, enc_d, queries, doc_ids, [texts[d] for d in doc_ids], positives,
                                    device=device)
    return qrels_examples(queries, qrels, texts, negatives, rng, n_negatives=1, domain=domain)


def domain_examples(args: argparse.Namespace, base: Any, cfg: TrainConfig, device: str) -> dict[str, list[Example]]:
    """Each domain's training pairs, tagged with the domain (hard negatives mined by ``base``)."""
    root = options.data_dir(args)
    rng = random.Random(args.seed)
    out: dict[str, list[Example]] = {}
    for domain in args.domains:
        folder = options.collection_dir(root, DOMAINS[domain][0])
        if domain == "scifact":
            train_ids, _ = carve_dev(load_qrels(folder, "train"), options.DEV_FRACTION, args.split_seed)
            out[domain] = _mined_examples(base, folder, "train", set(train_ids), domain, cfg, device, rng)
        elif domain == "xquad-r-en":
            train_ids, _ = split_by_article(load_qrels(folder, "test"), options.XQUAD_TRAIN_FRACTION, args.split_seed)
            out[domain] = _mined_examples(base, folder, "test", train_ids, domain, cfg, device, rng)
        else:
            docs = list(iter_corpus(folder))
            out[domain] = pretraining_examples(["ict", "bfs"], docs, rng, per_doc=args.pairs_per_doc, domain=domain)
        if not out[domain]:
            raise PipelineError(f"domain {domain!r}: no training pairs from {folder}")
    return out


def _evaluate(args, module, cfg, device, domain: str, tag: str) -> dict:
    sets = options.eval_sets(options.data_dir(args), [DOMAINS[domain][1]], args.split_seed)
    enc_q, enc_d = query_and_document_encoders(module, device, cfg.query_max_length, cfg.doc_max_length,
                                               domain=domain)
    return evaluate_sets(enc_q, enc_d, sets, device, args.runs_dir, tag)


def run_moe(args, cfg, device, per_domain: dict[str, list[Example]], argv: list[str]) -> dict:
    from pipeline.encoders.bi_encoders import minilm_path
    from pipeline.encoders.moe import moe_from_base

    base_dir = minilm_path() if args.init == "minilm" else Path(args.init)
    module = moe_from_base(base_dir, args.domains, args.moe_layers)
    examples = [ex for exs in per_domain.values() for ex in exs]
    stats = train_contrastive(module, examples, cfg, device).summary()
    tag = Path(args.out).name if args.out else "moe"
    metrics: dict = {}
    for domain in args.domains:
        metrics.update(_evaluate(args, module, cfg, device, domain, f"{tag}-{domain}"))
    if args.out:
        module.save(Path(args.out), {"query_max_length": cfg.query_max_length, "doc_max_length": cfg.doc_max_length})
        write_card(Path(args.out), job="moe", argv=argv, title=f"MoE bi-encoder over {', '.join(args.domains)}",
                   data={"domains": {d: len(e) for d, e in per_domain.items()}, "init": str(args.init),
                         "routing": "enforced by the text's domain; experts copied from the init model's FFNs"},
                   training={"config": cfg.__dict__, "stats": stats, "device": device},
                   metrics=metrics, weights_sha256=options.save_weights_checksum(Path(args.out)))
    return {"metrics": metrics, "stats": {"moe": stats}}


def run_separate(args, cfg, device, per_domain: dict[str, list[Example]], argv: list[str]) -> dict:
    metrics, all_stats = {}, {}
    for domain, exs in per_domain.items():
        seed_everything(args.seed)
        module, _, save = options.load_trainable(args.init)
        plain = [Example(e.query, e.positive, e.negatives, e.group, None, e.meta) for e in exs]
        stats = train_contrastive(module, plain, cfg, device).summary()
        all_stats[domain] = stats
        tag = f"{Path(args.out).name if args.out else 'separate'}-{domain}"
        m = _evaluate(args, module, cfg, device, domain, tag)
        metrics.update(m)
        if args.out:
            out = Path(args.out) / domain
            save(out)
            write_card(out, job="moe", argv=argv, title=f"{args.init} fine-tuned on {domain} only",
                       data={"domain": domain, "pairs": len(exs), "init": str(args.init)},
                       training={"config": cfg.__dict__, "stats": stats, "device": device},
                       metrics=m, weights_sha256=options.save_weights_checksum(out))
        del module
    return {"metrics": metrics, "stats": all_stats}


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    argv = canonical_argv(args) if argv is None else argv
    try:
        cfg = options.train_config(args)
        device = options.device_of(args)
        seed_everything(args.seed)
        base, _, _ = options.load_trainable(args.init)
        per_domain = domain_examples(args, base, cfg, device)
        del base
        result = (run_moe if args.mode == "moe" else run_separate)(args, cfg, device, per_domain, argv)
        for name, m in result["metrics"].items():
            print(f"{args.mode}\t{name}\tnDCG@10 {m['nDCG@10']:.4f}\tR@100 {m['R@100']:.4f}")
        args.result = {**result, "data": {d: len(e) for d, e in per_domain.items()}}
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
