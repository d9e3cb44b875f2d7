"""``python -m training listwise {rankings,teacher,train,interpolate}``: FIRST listwise reranker training.

1. ``rankings`` (CPU, here): run a configured pipeline over a split and write a ranking set
   (query texts, ranked doc ids with scores, passage texts) that the GPU machine can read
   without Lucene or the corpus. The teacher: ``--pipeline bm25>>ce --split train --depth 30``;
   the qrels fallback teacher: ``--pipeline bm25 --promote-qrels``. Benchmark candidates:
   ``--pipeline bm25 --split test --depth 100``.
2. ``train`` (GPU): sample windows from the teacher set (dev queries carved out of train; by default
   each window holds the teacher's best passage), fine-tune on the first-token logits (by default a
   listwise distillation of the teacher's scores; ``--rank-loss ranknet`` is the paper's weighted
   pairwise loss) + optionally the permutation LM loss, write the LoRA delta (or, with ``--lora-r 0``,
   the fully fine-tuned model with its tokenizer).
3. ``interpolate`` (CPU): choose the stage's ``interpolate`` (FIRST / first-stage blend) on the
   ``input.trec`` / ``first.trec`` runs of ``benchmarks/listwise_latency.py`` over a dev split
   (see :mod:`training.listwise.interpolation`).

Example::

    python -m training listwise rankings --dataset ../shared/data/scifact --split train \\
        --pipeline 'bm25>>ce' --depth 30 --out .cache/listwise/teacher
    python -m training listwise train --teacher .cache/listwise/teacher --out checkpoints/first-smollm2
    python -m training listwise interpolate --dev runs/listwise-dev --dev-qrels qrels/dev.tsv \\
        --test runs/listwise --test-qrels qrels/test.tsv --out runs/listwise-interpolation.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.core.settings_paths import default_config_path, default_index_root, default_models_dir

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    r = sub.add_parser("rankings", help="write a pipeline's ranking of a split as a ranking set")
    r.add_argument("--dataset", type=Path, required=True)
    r.add_argument("--split", default="train")
    r.add_argument("--pipeline", default="bm25")
    r.add_argument("--depth", type=int, default=30)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--promote-qrels", action="store_true", help="fallback teacher: judged docs moved to the top")
    r.add_argument("--max-chars", type=int, default=1500, help="passage text kept per document")
    r.add_argument("--config", type=Path, default=default_config_path())
    r.add_argument("--index-root", type=Path, default=default_index_root())
    r.add_argument("--models-dir", type=Path, default=default_models_dir())

    c = sub.add_parser("teacher", help="reorder a ranking set by cross-encoder scores (GPU or CPU)")
    c.add_argument("--candidates", type=Path, required=True, help="ranking set, e.g. BM25 top-30 of train queries")
    c.add_argument("--cross-encoder", type=Path, default=default_models_dir() / "ce-minilm")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--device", default="auto")

    t = sub.add_parser("train", help="fine-tune the FIRST reranker on a teacher ranking set")
    t.add_argument("--teacher", type=Path, required=True, help="ranking set folder from `rankings`")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--base", default="smollm2-135m")
    t.add_argument("--window", type=int, default=20)
    t.add_argument("--pool", type=int, default=100, help="windows are drawn from the teacher's top POOL")
    t.add_argument("--per-query", type=int, default=2, help="windows sampled per train query")
    t.add_argument("--shuffle-prob", type=float, default=1.0,
                   help="share of windows shown in random order; the rest in a perturbed teacher order, which "
                        "teaches a position shortcut (0.5 in the first run: the model kept the input order)")
    t.add_argument("--include-top", type=int, default=1,
                   help="teacher-best docs put in every window (the rest drawn from the pool): a clear winner per window")
    t.add_argument("--windows", default="sampled", choices=["sampled", "served", "both"],
                   help="sampled: --per-query windows drawn from the teacher's top --pool; served: the stage's sliding "
                        "windows over --first-stage's top --depth, re-sorted by the teacher as they go (see served_windows)")
    t.add_argument("--first-stage", type=Path, default=None,
                   help="ranking set in first-stage order (e.g. BM25 top-100 of the train queries), for --windows served")
    t.add_argument("--stride", type=int, default=10, help="--windows served: the stage's stride")
    t.add_argument("--depth", type=int, default=100, help="--windows served: the stage's depth")
    t.add_argument("--rank-loss", default="listnet", choices=["ranknet", "listnet"],
                   help="ranknet: the paper's weighted pairwise loss on teacher ranks; listnet: distil teacher scores")
    t.add_argument("--temperature", type=float, default=1.0, help="teacher score temperature for listnet")
    t.add_argument("--dev-fraction", type=float, default=0.1)
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--max-steps", type=int, default=0)
    t.add_argument("--eval-every", type=int, default=0,
                   help="evaluate the dev windows every N steps and keep the best weights (0: only at the end)")
    t.add_argument("--max-seconds", type=float, default=0.0, help="stop training after this long (0: no limit)")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--rank-weight", type=float, default=1.0)
    t.add_argument("--lm-weight", type=float, default=1.0)
    t.add_argument("--lora-r", type=int, default=16,
                   help="0: full fine-tuning (learns far better: dev top-1 0.66 vs 0.11, see models/first-smollm2)")
    t.add_argument("--passage-tokens", type=int, default=80)
    t.add_argument("--query-tokens", type=int, default=48)
    t.add_argument("--teacher-name", default="", help="what produced the teacher ranking (for the model card)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None)

    i = sub.add_parser("interpolate", help="tune the stage's FIRST/first-stage blend (alpha) on dev bench runs")
    i.add_argument("--dev", type=Path, required=True,
                   help="benchmarks/listwise_latency.py --out folder of dev queries (input.trec, first.trec)")
    i.add_argument("--dev-qrels", type=Path, required=True, help="TREC qrels or BEIR qrels tsv")
    i.add_argument("--test", type=Path, default=None, help="bench folder of test queries (reported, never chosen on)")
    i.add_argument("--test-qrels", type=Path, default=None)
    i.add_argument("--depth", type=int, default=None,
                   help="the bench's --depth (default: its listwise_bench.json, else 100)")
    i.add_argument("--out", type=Path, default=None, help="JSON report (default: <dev>/interpolation.json)")


def run(args: argparse.Namespace) -> int:
    if args.action == "rankings":
        return _rankings(args)
    if args.action == "teacher":
        return _teacher(args)
    if args.action == "interpolate":
        from training.listwise.interpolation import run as interpolate

        return interpolate(args)
    return _train(args)


def _teacher(args: argparse.Namespace) -> int:
    """Teacher orderings: every query's candidates sorted by the cross-encoder's scores."""
    import time

    from pipeline.scorers.cross_encoder import CrossEncoderScorer
    from training.listwise.data import Ranked, read_passages, read_rankings, write_ranking_set

    ranked, passages = read_rankings(args.candidates), read_passages(args.candidates)
    scorer = CrossEncoderScorer(args.cross_encoder, device=args.device)
    pairs = [(r.query, passages.get(d, "")) for r in ranked for d, _ in r.hits]
    start = time.perf_counter()
    scores = iter(scorer.score_pairs(pairs))
    out = []
    for r in ranked:
        hits = [(d, float(next(scores))) for d, _ in r.hits]
        out.append(Ranked(r.qid, r.query, sorted(hits, key=lambda h: (-h[1], h[0]))))
    write_ranking_set(args.out, out, passages)
    print(f"teacher: {len(pairs)} pairs scored by {args.cross_encoder.name} on {scorer.device} "
          f"in {time.perf_counter() - start:.1f}s -> {args.out}")
    return 0


def _rankings(args: argparse.Namespace) -> int:
    from eval.runner import judged_queries, remove_self_hits
    from indexer.build import ensure_indexes
    from pipeline.registry import BuildContext, build_pipeline, load_config, required_indexes
    from pipeline.scorers.passages import listwise_passage
    from pipeline.storage.collection import dataset_name, iter_corpus, load_qrels
    from training.listwise.data import Ranked, promote_relevant, write_ranking_set

    config = load_config(args.config)
    collection = dataset_name(args.dataset)
    ensure_indexes(args.dataset, collection, config, required_indexes(config, args.pipeline), args.index_root)
    ctx = BuildContext(index_root=args.index_root, collection=collection, config=config, models_dir=args.models_dir)
    pipe = build_pipeline(args.pipeline, ctx)
    queries, _ = judged_queries(args.dataset, args.split)
    qrels = load_qrels(args.dataset, args.split) if args.promote_qrels else {}
    ranked: list[Ranked] = []
    for i in range(0, len(queries), 32):
        batch = queries[i : i + 32]
        results = remove_self_hits(pipe(batch))
        for q in batch:
            r = Ranked(q.query_id, q.text, [(h.doc_id, h.score) for h in results[q.query_id][: args.depth]])
            if args.promote_qrels:
                r = promote_relevant(r, [d for d, rel in qrels.get(q.query_id, {}).items() if rel > 0])
            ranked.append(r)
        logger.info("%d/%d queries", min(i + 32, len(queries)), len(queries))
    needed = {d for r in ranked for d, _ in r.hits}
    passages = {doc.doc_id: listwise_passage(doc)[: args.max_chars]
                for doc in iter_corpus(args.dataset) if doc.doc_id in needed}
    n = write_ranking_set(args.out, ranked, passages)
    print(f"wrote {n} queries, {len(passages)} passages to {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from pipeline.scorers.llm_loading import load_causal_lm
    from training.listwise.data import is_dev, read_passages, read_rankings, sample_windows, served_windows
    from training.listwise.trainer import TrainSettings, save_adapter, train

    ranked = read_rankings(args.teacher)
    passages = read_passages(args.teacher)
    train_q = [r for r in ranked if not is_dev(r.qid, args.dev_fraction)]
    dev_q = [r for r in ranked if is_dev(r.qid, args.dev_fraction)]
    windows, dev = [], []
    if args.windows in ("sampled", "both"):
        windows += sample_windows(train_q, passages, args.window, args.pool, args.per_query,
                                  shuffle_prob=args.shuffle_prob, seed=args.seed, include_top=args.include_top)
    if args.windows in ("served", "both"):
        if args.first_stage is None:
            raise SystemExit("--windows served needs --first-stage <ranking set in first-stage order>")
        first = {r.qid: r for r in read_rankings(args.first_stage)}
        passages = {**read_passages(args.first_stage), **passages}
        teacher = {r.qid: dict(r.hits) for r in ranked}
        served = [first[r.qid] for r in train_q if r.qid in first]
        windows += served_windows(served, teacher, passages, args.window, args.stride, args.depth)
        dev += served_windows([first[r.qid] for r in dev_q if r.qid in first], teacher, passages, args.window,
                              args.stride, args.depth)  # served-style dev windows: the agreement that matters
    if args.windows == "sampled":
        dev += sample_windows(dev_q, passages, args.window, args.pool, 1, shuffle_prob=1.0, seed=args.seed + 1,
                              include_top=args.include_top)
    logger.info("%d train windows from %d queries; %d dev windows", len(windows), len(train_q), len(dev))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_causal_lm(args.base, device=device, dtype="float32")
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, rank_weight=args.rank_weight,
                             rank_loss=args.rank_loss, temperature=args.temperature,
                             lm_weight=args.lm_weight, lora_r=args.lora_r, lora_alpha=2 * max(args.lora_r, 1),
                             passage_tokens=args.passage_tokens, query_tokens=args.query_tokens,
                             max_steps=args.max_steps, max_seconds=args.max_seconds, seed=args.seed,
                             eval_every=args.eval_every)
    model, report = train(model, tokenizer, windows, settings, dev=dev, device=device)
    extra = {"teacher": args.teacher_name or str(args.teacher.name), "train_queries": len(train_q),
             "dev_queries": len(dev_q), "window": args.window, "pool": args.pool, "per_query": args.per_query,
             "shuffle_prob": args.shuffle_prob, "include_top": args.include_top, "windows": args.windows,
             "stride": args.stride, "depth": args.depth,
             "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"}
    save_adapter(model, args.out, report, settings, extra, base_name=args.base, tokenizer=tokenizer)
    print(f"trained {report.steps} steps on {report.examples} windows in {report.seconds:.0f}s; dev {report.dev}",
          file=sys.stdout)
    return 0
