"""``python -m training cross-encoder {mine,pseudo,generate,train,card,...}``.

Rebuild the default reranker (``models/ce-minilm``)::

    # 1. on the CPU: BM25 candidates of SciFact train/dev/test -> .cache/ce/scifact/*.json.gz
    python -m training cross-encoder mine --dataset ../shared/data/scifact --out .cache/ce/scifact
    # 2. dense candidates (MiniLM over the whole corpus; seconds on a GPU, many minutes on 2 CPU cores)
    python -m training cross-encoder densify --bundle .cache/ce/scifact
    # 3. on the GPU (about a minute per variant; CPU works but is slow): train, pick by dev, write the card
    python -m training cross-encoder train --bundle .cache/ce/scifact --out models/ce-minilm
    # the ablation table: train every variant, keep the best by dev nDCG@10
    python -m training cross-encoder train --bundle .cache/ce/scifact --out models/ce-minilm --variants all

Pseudo-queries from a bare corpus (issue 19): titles (``pseudo``) or SmolLM2 questions kept when
MiniLM+BM25 find their document again (``generate``; GPU recipe in gpu/README.md)::

    python -m training cross-encoder generate --dataset ../shared/data/cranfield --out .cache/pseudo/cranfield-gen \
        --limit 300 --device cpu

Multi-domain training (SciFact + the training articles of XQuAD-R en), with Cranfield reported
as an unseen collection (an eval-only bundle: ``--train-split ''``)::

    python -m training cross-encoder mine-xquad --data ../shared/data/xquad-r --lang en --out .cache/ce/xquad-en
    python -m training cross-encoder mine --dataset ../shared/data/cranfield --train-split '' --out .cache/ce/cranfield
    python -m training cross-encoder train --bundle .cache/ce/scifact .cache/ce/xquad-en \\
        --extra-eval .cache/ce/cranfield/eval-test.json.gz --out models/ce-minilm
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="action", required=True)

    mine = sub.add_parser("mine", help="mine BM25 (+ dense) candidates into training/eval bundles")
    mine.add_argument("--dataset", type=Path, required=True, help="BEIR-layout folder with a train split")
    mine.add_argument("--out", type=Path, required=True, help="folder for train.json and eval-<split>.json")
    mine.add_argument("--index-root", type=Path, default=None, help="published indexes (default $SEARCH_INDEX_ROOT)")
    mine.add_argument("--train-split", default="train")
    mine.add_argument("--eval-split", action="append", default=None, help="splits to report on (default: test)")
    mine.add_argument("--dev-queries", type=int, default=100)
    mine.add_argument("--seed", type=int, default=13)
    mine.add_argument("--depth", type=int, default=200)
    mine.add_argument("--dense", action="store_true", help="also add dense lists here (slow on a CPU; see densify)")

    xquad = sub.add_parser("mine-xquad", help="mine a training bundle from XQuAD-R's training articles (one language)")
    xquad.add_argument("--data", type=Path, required=True, help="the xquad-r folder (holds <lang>/)")
    xquad.add_argument("--lang", default="en")
    xquad.add_argument("--out", type=Path, required=True)
    xquad.add_argument("--index-root", type=Path, default=None, help="published indexes (default $SEARCH_INDEX_ROOT)")
    xquad.add_argument("--dev-queries", type=int, default=100)
    xquad.add_argument("--seed", type=int, default=13)
    xquad.add_argument("--depth", type=int, default=200)

    corpus = sub.add_parser("corpus", help="write a local English corpus (debian package descriptions, manual pages)")
    corpus.add_argument("source", choices=["debian", "manpages"])
    corpus.add_argument("--out", type=Path, required=True, help="folder for corpus.jsonl (BEIR layout)")
    corpus.add_argument("--limit", type=int, default=20000)
    corpus.add_argument("--seed", type=int, default=13)

    pseudo = sub.add_parser("pseudo", help="title or sentence pseudo-queries: a BEIR dataset (train split) from a bare corpus")
    pseudo.add_argument("--dataset", type=Path, required=True, help="BEIR folder (titles needed for --kind title)")
    pseudo.add_argument("--kind", choices=("title", "sentence"), default="title",
                        help="title: a title asks for its body; sentence: one sentence asks for the rest (ICT)")
    pseudo.add_argument("--out", type=Path, required=True)
    pseudo.add_argument("--limit", type=int, default=None, help="at most this many queries (seeded sample)")
    pseudo.add_argument("--seed", type=int, default=13)

    gen = sub.add_parser("generate", help="LM-generated pseudo-queries (SmolLM2, InPars-style), round-trip filtered")
    gen.add_argument("--dataset", type=Path, required=True, help="BEIR folder (only corpus.jsonl is read)")
    gen.add_argument("--out", type=Path, required=True, help="pseudo dataset folder (resumable: re-run to continue)")
    gen.add_argument("--limit", type=int, default=None, help="documents to ask about (seeded sample; default all)")
    gen.add_argument("--per-doc", type=int, default=1, help="questions per document (>1 samples at temperature 0.7)")
    gen.add_argument("--device", default=None, help="cuda or cpu (default: cuda if there)")
    gen.add_argument("--batch-size", type=int, default=64)
    gen.add_argument("--keep-top", type=int, default=20, help="keep a question if its source is in this top")
    gen.add_argument("--first-stage", default="hybrid", choices=["hybrid", "dense", "bm25", "none"],
                     help="round-trip retriever over the whole corpus (no Java needed)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy (sampling when --per-doc > 1)")
    gen.add_argument("--model", default="smollm2-135m", help="smollm2-135m, a GGUF file or a transformers folder")
    gen.add_argument("--dense-model", type=Path, default=None, help="MiniLM folder (default: the packaged one)")
    gen.add_argument("--progress-every", type=int, default=100, help="log progress every N documents")
    gen.add_argument("--seed", type=int, default=13)
    gen.add_argument("--max-seconds", type=float, default=None,
                     help="stop generating after this long and filter what is done (a re-run continues)")

    densify = sub.add_parser("densify", help="add dense (all-MiniLM-L6-v2) candidate lists to mined bundles (GPU if any)")
    densify.add_argument("--bundle", type=Path, required=True, help="folder of *.json.gz bundles")
    densify.add_argument("--model", type=Path, default=None, help="MiniLM folder (default: the packaged one)")
    densify.add_argument("--device", default=None)
    densify.add_argument("--force", action="store_true", help="recompute bundles that already have dense lists")

    train = sub.add_parser("train", help="train (and optionally ablate) the cross-encoder")
    train.add_argument("--bundle", type=Path, nargs="+", required=True,
                       help="folder(s) with train.json.gz; several = multi-domain training (the first one's "
                            "eval-<split>.json.gz is the report split)")
    train.add_argument("--extra-eval", type=Path, nargs="*", default=[],
                       help="more eval bundles (e.g. an unseen collection) reported under their dataset name")
    train.add_argument("--out", type=Path, required=True, help="model folder to write")
    train.add_argument("--variants", default="listwise+curriculum",
                       help="comma-separated variant names, or 'all' (see training/cross_encoder/ablation.py)")
    train.add_argument("--report-split", default="test", help="eval bundle to report on ('' for none)")
    train.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    train.add_argument("--code-commit", default="unknown")
    from training.cross_encoder.trainer import TrainConfig

    defaults = TrainConfig()
    for name in ("negatives", "rank_from", "rank_to", "epochs", "groups_per_batch", "max_length", "query_max_tokens",
                 "eval_depth", "patience", "seed", "max_steps"):
        train.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("lr", "weight_decay", "warmup_fraction", "anneal_fraction"):
        train.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    train.add_argument("--loss", default=defaults.loss.value, choices=["listwise", "pointwise", "pairwise"])
    train.add_argument("--heuristic", default=defaults.heuristic.value, choices=["recip", "score"])
    train.add_argument("--retrievers", default="bm25", help="negatives from: bm25 or bm25,dense")
    train.add_argument("--no-curriculum", action="store_true")
    train.add_argument("--device", default="auto")
    train.add_argument("--base-model", default=None, help="encoder folder to start from (default: packaged MiniLM)")
    train.add_argument("--max-seconds", type=float, default=None,
                       help="stop taking steps after this many seconds of training (then evaluate and save as usual)")
    train.add_argument("--init-model", default=None,
                       help="cross-encoder folder (encoder and head) to train further, e.g. models/ce-minilm")
    train.add_argument("--teacher", default="none", choices=["none", "hybrid", "model"],
                       help="hybrid: also distil the zero-shot BM25+MiniLM fusion's ranking of each group (KL); "
                            "model: a frozen cross-encoder's (--teacher-model), e.g. into a --student-layers student")
    train.add_argument("--teacher-model", default=None, help="cross-encoder folder of --teacher model")
    train.add_argument("--distill-weight", type=float, default=defaults.distill_weight)
    train.add_argument("--distill-temperature", type=float, default=defaults.distill_temperature)
    train.add_argument("--label-weight", type=float, default=defaults.label_weight,
                       help="weight of the ranking loss on the labels (0 with a teacher: pure distillation)")
    train.add_argument("--student-layers", type=int, default=None,
                       help="keep this many of the starting model's layers (evenly spaced, last kept): a faster student")
    train.add_argument("--repeat", type=int, nargs="*", default=[],
                       help="per --bundle: how many times its train queries count in an epoch (default 1 each)")
    train.add_argument("--dump-scores", type=Path, default=None,
                       help="folder for raw reranker scores of every reported run (dev included), for blend studies")

    interp = sub.add_parser("interpolate", help="tune the stage's reranker/first-stage blend (alpha) on dev queries")
    interp.add_argument("--model", type=Path, required=True, help="cross-encoder folder, e.g. models/ce-minilm")
    interp.add_argument("--bundle", type=Path, nargs="+", required=True, help="training bundles (their dev queries)")
    interp.add_argument("--extra-eval", type=Path, nargs="*", default=[], help="eval bundles of unseen collections")
    interp.add_argument("--split", default="test", help="each training bundle's eval split reported")
    interp.add_argument("--depth", type=int, default=100)
    interp.add_argument("--device", default="auto")
    interp.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"])
    interp.add_argument("--heldout-report", type=Path, default=None,
                        help="an interpolate report of a reranker on dev queries of a domain it was not trained on: "
                             "alpha is then chosen on the mean of in-domain and held-out-domain dev")
    interp.add_argument("--out", type=Path, required=True, help="JSON report")

    blend = sub.add_parser("blend", help="nDCG@10 of the reranker/first-stage blend per alpha, from dumped scores")
    blend.add_argument("--dumps", type=Path, required=True, help="folder written by train --dump-scores")
    blend.add_argument("--out", type=Path, default=None, help="JSON report (default: print only)")

    soup = sub.add_parser("soup", help="weighted mean of the weights of rerankers continued from one model (WiSE-FT)")
    soup.add_argument("--models", type=Path, nargs="+", required=True, help="cross-encoder folders (two or more)")
    soup.add_argument("--weights", type=float, nargs="*", default=None, help="one per model (default: uniform)")
    soup.add_argument("--out", type=Path, required=True, help="folder for the averaged reranker")

    card = sub.add_parser("card", help="(re)write MODEL_CARD.md of a model folder from its training report")
    card.add_argument("--model", type=Path, required=True)
    card.add_argument("--report", type=Path, help="training_report.json (default: the model folder's)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "mine":
            return _mine(args)
        if args.action == "mine-xquad":
            return _mine_xquad(args)
        if args.action == "corpus":
            return _corpus(args)
        if args.action == "pseudo":
            from training.cross_encoder.data.pseudo_queries import write_pseudo_dataset

            print(json.dumps(write_pseudo_dataset(args.dataset, args.out, args.kind, args.limit, args.seed)))
            return 0
        if args.action == "generate":
            return _generate(args)
        if args.action == "densify":
            return _densify(args)
        if args.action == "train":
            return _train(args)
        if args.action == "blend":
            return _blend(args)
        if args.action == "soup":
            from training.cross_encoder.soup import make_soup

            print(json.dumps(make_soup(args.models, args.weights, args.out)))
            return 0
        if args.action == "interpolate":
            from training.cross_encoder.interpolation import run as interpolate

            return interpolate(args)
        return _card(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _mine(args) -> int:
    from pipeline.core.settings_paths import default_index_root
    from training.cross_encoder.data.mining import mine

    paths = mine(args.dataset, args.out, args.index_root or default_index_root(), args.train_split,
                 args.eval_split or ["test"], args.dev_queries, args.seed, args.depth)
    if args.dense:
        from training.cross_encoder.data.mining import add_dense

        add_dense(paths)
    for p in paths:
        print(p)
    return 0


def _mine_xquad(args) -> int:
    from pipeline.core.settings_paths import default_index_root
    from training.cross_encoder.data.mining import mine_xquad

    print(mine_xquad(args.data, args.lang, args.out, args.index_root or default_index_root(), args.dev_queries,
                     args.seed, args.depth))
    return 0


def _corpus(args) -> int:
    from training.cross_encoder.data import local_corpora

    docs = (local_corpora.debian_descriptions(args.limit, args.seed) if args.source == "debian"
            else local_corpora.man_pages(args.limit, args.seed))
    print(f"{args.out / 'corpus.jsonl'}: {local_corpora.write_corpus(docs, args.out)} documents")
    return 0


def _generate(args) -> int:
    from pipeline.core.errors import PipelineError
    from training.cross_encoder.data.generated_queries import write_generated_dataset

    try:
        info = write_generated_dataset(args.dataset, args.out, args.limit, args.per_doc, args.device,
                                       args.batch_size, args.keep_top, args.seed, args.first_stage,
                                       args.temperature, args.progress_every, args.model, args.dense_model,
                                       max_seconds=args.max_seconds)
    except PipelineError as exc:  # a missing model package, a bad corpus line
        raise ValueError(str(exc)) from exc
    print(json.dumps({k: info[k] for k in ("source", "queries", "counts", "generation", "filter")}))
    return 0


def _densify(args) -> int:
    from training.cross_encoder.data.mining import add_dense

    paths = sorted(args.bundle.glob("*.json.gz"))
    if not paths:
        raise FileNotFoundError(f"no *.json.gz bundles in {args.bundle}: run `python -m training cross-encoder mine` first")
    written = add_dense(paths, args.model, args.device, force=args.force)
    print(f"{written} of {len(paths)} bundles densified (the others had dense lists already)")
    return 0


def _train(args) -> int:
    from training.cross_encoder.ablation import VARIANTS, run_ablation
    from training.cross_encoder.data.bundle import load_bundle, merge_bundles, repeat_train
    from training.cross_encoder.model_card import write_model_card
    from training.cross_encoder.trainer import TrainConfig, resolve_device

    cfg = TrainConfig(
        loss=args.loss, negatives=args.negatives, rank_from=args.rank_from, rank_to=args.rank_to,
        retrievers=tuple(r.strip() for r in args.retrievers.split(",") if r.strip()), curriculum=not args.no_curriculum,
        heuristic=args.heuristic, anneal_fraction=args.anneal_fraction, epochs=args.epochs, lr=args.lr,
        weight_decay=args.weight_decay, warmup_fraction=args.warmup_fraction, groups_per_batch=args.groups_per_batch,
        max_length=args.max_length, query_max_tokens=args.query_max_tokens, eval_depth=args.eval_depth,
        patience=args.patience, seed=args.seed, device=args.device, max_steps=args.max_steps, max_seconds=args.max_seconds,
        base_model=args.base_model, init_model=args.init_model, teacher=args.teacher, teacher_model=args.teacher_model,
        distill_weight=args.distill_weight, distill_temperature=args.distill_temperature, label_weight=args.label_weight,
        student_layers=args.student_layers)
    names = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.repeat and len(args.repeat) != len(args.bundle):
        raise ValueError(f"--repeat takes one count per --bundle ({len(args.bundle)}), got {len(args.repeat)}")
    parts = [load_bundle(b / "train.json.gz") for b in args.bundle]
    train_bundle = merge_bundles([repeat_train(p, r) for p, r in zip(parts, args.repeat or [1] * len(parts), strict=True)])
    eval_path = args.bundle[0] / f"eval-{args.report_split}.json.gz" if args.report_split else None
    eval_bundle = load_bundle(eval_path) if eval_path and eval_path.is_file() else None
    extra_evals = {}
    for path in args.extra_eval:
        bundle = load_bundle(path)
        extra_evals[str(bundle.meta.get("dataset", path.stem))] = bundle
    extra = {"command": "python -m training cross-encoder " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["cross-encoder"] else sys.argv[1:]),
             "code_commit": args.code_commit, "device": _device_name(resolve_device(args.device)), "data": train_bundle.meta}

    def save_report(report: dict) -> None:
        report.update(extra)
        (args.out / "training_report.json").write_text(json.dumps(report, indent=2))
        write_model_card(args.out, report)

    report = run_ablation(cfg, names, train_bundle, eval_bundle, args.out, dtype=args.dtype, on_variant=save_report,
                          extra_evals=extra_evals, dump_dir=args.dump_scores)
    save_report(report)
    from training.cross_encoder.model_card import ablation_table

    print(ablation_table(report["variants"]))
    print(f"model: {args.out} (variant {report['chosen']['name']}, dev nDCG@10 {report['chosen']['dev_ndcg10']:.4f})")
    return 0


def _blend(args) -> int:
    from training.cross_encoder.blend_study import summary

    table = summary(args.dumps)
    if not table:
        raise FileNotFoundError(f"no <variant>--<tag>.json dumps in {args.dumps}")
    for variant, sets in table.items():
        for name, stages in sets.items():
            for stage, c in stages.items():
                print(f"{variant:48s} {name:22s} {stage:8s} first {c['0.0']:.4f}  ce {c['1.0']:.4f}  "
                      + " ".join(f"{a}:{v:.4f}" for a, v in c.items() if a not in ("0.0", "1.0")))
    if args.out:
        args.out.write_text(json.dumps(table, indent=1))
    return 0


def _card(args) -> int:
    from training.cross_encoder.model_card import write_model_card

    report = json.loads((args.report or args.model / "training_report.json").read_text())
    print(write_model_card(args.model, report))
    return 0


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"cpu (torch {torch.__version__})"
