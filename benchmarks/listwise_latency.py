"""FIRST vs generative listwise reranking: per-query latency and rankings, same model and candidates.

Reads a ranking set (``python -m training listwise rankings ... --split test --depth 100``),
reranks every query's top ``--depth`` with a sliding window in both modes (the generative
mode is the baseline, measured in the same run), and prints:

* per-query latency (one query at a time, ``--latency-queries`` of them, after a warm-up),
  median and mean, and the FIRST / generative ratio;
* batched throughput over all queries (windows of several queries share a forward pass);
* generated permutations that needed repair.

Runs are written as TREC files under ``--out`` (``input``, ``first``, ``generative``); with
``--qrels`` and ir-measures installed it also prints nDCG@10 of each, else score the runs with
``python -m eval`` tooling afterwards. Example (GPU machine)::

    python -m benchmarks.listwise_latency --candidates .cache/listwise/scifact-test-bm25 \\
        --adapter models/first-smollm2 --out runs/listwise --qrels ../shared/data/scifact/qrels/test.tsv
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from eval.trec import write_run
from pipeline.core.types import Document, Hit, Query, Results
from pipeline.scorers.listwise import FirstListwiseScorer
from pipeline.scorers.llm_loading import load_causal_lm
from pipeline.scorers.passages import Passages
from pipeline.stages.rerank import RerankStage
from training.listwise.data import read_passages, read_rankings

REPO = Path(__file__).resolve().parent.parent


class PassageDocs:
    """The ranking set's passages as a document store (texts are already ``title. text``)."""

    def __init__(self, passages: dict[str, str]):
        self.passages = passages

    def get_many(self, doc_ids):
        return {d: Document(d, "", self.passages[d]) for d in doc_ids if d in self.passages}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(stage: RerankStage, queries: list[Query], candidates: Results) -> tuple[Results, float]:
    _sync()
    start = time.perf_counter()
    out = stage(queries, candidates)
    _sync()
    return out, time.perf_counter() - start


def ndcg10(qrels_path: Path | None, runs: dict[str, Results]) -> dict[str, float]:
    if qrels_path is None:
        return {}
    try:
        from eval.metrics import evaluate
    except ImportError:
        print("ir-measures is not installed here: score the run files elsewhere", file=sys.stderr)
        return {}
    qrels: dict[str, dict[str, int]] = {}
    for line in qrels_path.read_text().splitlines()[1:]:
        if line.strip():
            q, d, s = line.split("\t")[:3]
            qrels.setdefault(q, {})[d] = int(s)
    return {name: evaluate(qrels, {q: {h.doc_id: h.score for h in hs} for q, hs in run.items()})["nDCG@10"]
            for name, run in runs.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=Path, required=True, help="ranking set folder")
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--adapter", type=Path, default=None)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "listwise")
    p.add_argument("--qrels", type=Path, default=None)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--passage-tokens", type=int, default=80)
    p.add_argument("--query-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass (FIRST)")
    p.add_argument("--gen-batch-size", type=int, default=128, help="windows per generate call")
    p.add_argument("--latency-queries", type=int, default=5)
    p.add_argument("--limit", type=int, default=0, help="only the first N queries (0: all)")
    p.add_argument("--skip-generative-batch", action="store_true", help="latency only for the generative mode")
    p.add_argument("--first-only", action="store_true", help="no generative baseline at all (a quick nDCG check)")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)

    ranked = read_rankings(args.candidates)[: args.limit or None]
    docs = PassageDocs(read_passages(args.candidates))
    queries = [Query(r.qid, r.query) for r in ranked]
    candidates = {r.qid: [Hit(r.qid, d, s, {"input": s}) for d, s in r.hits] for r in ranked}
    t0 = time.perf_counter()
    model, tokenizer = load_causal_lm(args.base, adapter=args.adapter, device=args.device)
    load_s = time.perf_counter() - t0
    common = dict(window=args.window, stride=args.stride, passage_tokens=args.passage_tokens, query_tokens=args.query_tokens)
    passages = Passages(docs, title_separator=". ", collapse_whitespace=True)  # as the listwise stage reads them
    first = RerankStage(FirstListwiseScorer(model, tokenizer, mode="first", batch_size=args.batch_size, **common),
                        passages, top_n=args.depth, name="listwise")
    gen = RerankStage(FirstListwiseScorer(model, tokenizer, mode="generative", batch_size=args.gen_batch_size, **common),
                      passages, top_n=args.depth, name="listwise")

    stages = (("first", first),) if args.first_only else (("first", first), ("generative", gen))
    warm = queries[:1]
    for _, stage in stages:
        timed(stage, warm, candidates)
    lat: dict[str, list[float]] = {"first": [], "generative": []}
    for q in queries[1 : 1 + args.latency_queries]:
        for name, stage in stages:
            lat[name].append(timed(stage, [q], {q.query_id: candidates[q.query_id]})[1])
    gen.scorer.stats.update(windows=0, repaired=0)
    runs: dict[str, Results] = {"input": candidates}
    seconds: dict[str, float] = {}
    runs["first"], seconds["first"] = timed(first, queries, candidates)
    if not (args.skip_generative_batch or args.first_only):
        runs["generative"], seconds["generative"] = timed(gen, queries, candidates)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, run in runs.items():
        write_run(run, args.out / f"{name}.trec", tag=name)
    for name, run in runs.items():  # every candidate comes back exactly once
        for qid, hits in run.items():
            assert sorted(h.doc_id for h in hits) == sorted(h.doc_id for h in candidates[qid]), (name, qid)

    import torch

    med = {k: statistics.median(v) for k, v in lat.items() if v}
    ratio = med["first"] / med["generative"] if "generative" in med and "first" in med else None
    summary = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "queries": len(queries), "window": args.window, "stride": args.stride, "depth": args.depth,
        "load_seconds": round(load_s, 2),
        "latency_queries": len(lat["first"]),
        "latency_median_s": med, "latency_mean_s": {k: statistics.mean(v) for k, v in lat.items() if v},
        "latency_all_s": lat,
        "first_over_generative": ratio,
        "batched_seconds": seconds, "batched_ms_per_query": {k: 1000 * v / len(queries) for k, v in seconds.items()},
        "generative_windows": gen.scorer.stats["windows"], "generative_repaired": gen.scorer.stats["repaired"],
        "ndcg@10": ndcg10(args.qrels, runs),
    }
    (args.out / "listwise_bench.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    if ratio is not None:
        print(f"\nper-query latency (median of {len(lat['first'])}, {summary['device']}): "
              f"FIRST {med['first'] * 1000:.0f} ms, generative {med['generative'] * 1000:.0f} ms, "
              f"ratio {summary['first_over_generative']:.3f} ({100 * (1 - summary['first_over_generative']):.0f}% lower)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
