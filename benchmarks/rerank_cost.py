"""Per-query latency of a reranking pipeline as configured vs with other reranker settings, in one run.

Builds the named pipeline twice from the config, once with ``--baseline`` and once with ``--candidate``
overrides of its cross-encoder stage (e.g. ``top_n=100,max_length=384`` vs ``top_n=30,max_length=256``),
then runs ``--queries`` test queries one at a time (as the service does), alternating the two, for
``--rounds`` rounds after a warm-up. Prints the median and p90 wall milliseconds per query of both and
the median ratio; their nDCG@10 over those queries is printed as a sanity check only (quality is measured
on whole splits by ``python -m eval.rerank_tradeoff`` and ``python -m eval``)::

    python -m benchmarks.rerank_cost --dataset ../shared/data/scifact --pipeline 'hybrid>>ce' \\
        --baseline top_n=100,max_length=384 --candidate top_n=30,max_length=256 --queries 20
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import yaml

from eval.metrics import evaluate
from pipeline.core.build_context import BuildContext
from pipeline.core.settings_paths import default_index_root
from pipeline.registry import build_pipeline, parse_config
from pipeline.storage.collection import dataset_name, load_qrels, load_queries


def overrides(text: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def variant_config(raw: dict, pipeline: str, variants: dict[str, dict]) -> dict:
    """``raw`` with one copy of ``pipeline`` per variant, its reranking stages updated with the variant's settings."""
    raw = copy.deepcopy(raw)
    for name, settings in variants.items():
        spec = copy.deepcopy(raw["pipelines"][pipeline])
        for stage in spec["stages"]:
            if stage.get("type") == "cross_encoder":
                stage.update(settings)
        raw["pipelines"][name] = spec
    return raw


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--pipeline", default="hybrid>>ce")
    p.add_argument("--config", type=Path, default=Path("configs/pipelines.yaml"))
    p.add_argument("--index-root", type=Path, default=None)
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--baseline", type=overrides, default={}, help="k=v,... on the cross-encoder stage (default: as configured)")
    p.add_argument("--candidate", type=overrides, required=True, help="k=v,... on the cross-encoder stage")
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)

    raw = yaml.safe_load(args.config.read_text())
    config = parse_config(variant_config(raw, args.pipeline, {"baseline": args.baseline, "candidate": args.candidate}),
                          str(args.config))
    ctx = BuildContext(index_root=args.index_root or default_index_root(), collection=dataset_name(args.dataset),
                       config=config, models_dir=args.models_dir)
    pipelines = {name: build_pipeline(name, ctx) for name in ("baseline", "candidate")}
    qrels = load_qrels(args.dataset, args.split)
    queries = load_queries(args.dataset)
    chosen = [queries[q] for q in list(qrels)[: args.queries + args.warmup]]
    for q in chosen[: args.warmup]:
        for pipe in pipelines.values():
            pipe.run([q])
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    runs: dict[str, dict] = {name: {} for name in pipelines}
    ratios = []
    for _ in range(args.rounds):
        for q in chosen[args.warmup :]:
            ms = {}
            for name, pipe in pipelines.items():
                start = time.perf_counter()
                out = pipe.run([q])
                ms[name] = (time.perf_counter() - start) * 1000
                times[name].append(ms[name])
                runs[name][q.query_id] = {h.doc_id: h.score for h in out.results.get(q.query_id, [])}
            ratios.append(ms["baseline"] / ms["candidate"])
    judged = {q: qrels[q] for q in runs["baseline"]}
    print(f"{dataset_name(args.dataset)} {args.split} {args.pipeline}: {len(judged)} queries x {args.rounds} rounds, "
          f"one query at a time, alternating")
    for name, settings in (("baseline", args.baseline), ("candidate", args.candidate)):
        t = sorted(times[name])
        ndcg = evaluate(judged, runs[name])["nDCG@10"]
        print(f"  {name:9s} {settings or 'as configured'}: median {statistics.median(t):8.1f} ms, "
              f"p90 {t[int(0.9 * (len(t) - 1))]:8.1f} ms, nDCG@10 on these queries {ndcg:.4f}")
    print(f"  speed-up (baseline / candidate, per query): median {statistics.median(ratios):.2f}x, "
          f"min {min(ratios):.2f}x, max {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
