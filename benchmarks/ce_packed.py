"""Padded vs packed (padding-free) cross-encoder scoring, in one run: pairs/s and the rankings they give.

Every variant scores the same pairs (a mined eval bundle: each query with its BM25 top ``--depth``):

* ``padded``: the baseline, today's measured GPU configuration (bf16, length-sorted batches of 512 padded to
  multiples of 64, ``torch.compile``; ``packing: off``, no passage cache); on a CPU fp32 eager.
* ``packed``: the same model padding-free (``packing: on``), compiled; no passage cache (tokenizes every text,
  like the baseline). ``packed eager``: the same, not compiled.
* ``... cached`` rows: the same scorer (no second compile) with the passage ids cache warm (the service default
  on a GPU: a passage is tokenized once, a query tokenizes only itself): end to end timed again; its forward
  is the row above's.

For each: forward (``score_encoded`` over pre-tokenized pairs, host batching included) and end to end
(``score_pairs``: texts in, scores out), median and best of ``--repeats``, and the ratio to the baseline's.
Rankings: per query, the top 10 of each variant against the baseline's (same set, same order), max and mean
|score difference|, nDCG@10 where the bundle has qrels. One JSON object at the end (``--json-out``).

    python -m benchmarks.ce_packed --device cuda                                  # the GPU job: gpu/jobs/ce_packed.sh
    python -m benchmarks.ce_packed --device cpu --queries 2 --depth 20 --repeats 1   # a small CPU check (fp32)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REFERENCE = "reference fp32"  # eager fp32 (no TF32): what every variant's scores approximate
GPU_BASE = dict(precision="bf16", batch_size=512, batch_tokens=512 * 512, pad_multiple=64)
VARIANTS = {  # name: scorer options on top of the device's base, and whether a "cached" row follows
    "padded": (dict(packing="off", compile=True, passage_cache=0), True),
    "default": (dict(compile=True, passage_cache=0), True),  # the engine's GPU defaults (packing auto, GELU epilogue)
    "packed": (dict(packing="on", compile=True, passage_cache=0, packed_gelu_epilogue=False), True),
    "packed eager": (dict(packing="on", compile=False, passage_cache=0, packed_gelu_epilogue=False), False),
    "padded fp16": (dict(packing="off", compile=True, passage_cache=0, precision="fp16"), False),
    "packed fp16": (dict(packing="on", compile=True, passage_cache=0, precision="fp16", packed_gelu_epilogue=False), True),
    "packed 256k": (dict(packing="on", compile=True, passage_cache=0, packed_tokens=262144, packed_gelu_epilogue=False), True),
    "packed autotune": (dict(packing="on", compile=True, passage_cache=0, compile_mode="max-autotune-no-cudagraphs", packed_gelu_epilogue=False), True),
    "packed gelu": (dict(packing="on", compile=True, passage_cache=0, packed_gelu_epilogue=True), True),
    "packed fp16 gelu": (dict(packing="on", compile=True, passage_cache=0, precision="fp16", packed_gelu_epilogue=True), True),
    REFERENCE: (dict(packing="off", compile=False, passage_cache=0, precision="fp32"), False),
}
DEFAULT_VARIANTS = ["padded", "packed", "packed eager"]


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def times(fn, n: int) -> tuple[list[float], object]:
    out, spent = None, []
    for _ in range(n):
        start = time.perf_counter()
        out = fn()
        sync()
        spent.append(time.perf_counter() - start)
    return spent, out


def rates(n_pairs: int, spent: list[float]) -> dict[str, float]:
    digits = 0 if n_pairs / min(spent) >= 100 else 1
    return {"median": round(n_pairs / statistics.median(spent), digits), "best": round(n_pairs / min(spent), digits)}


def run_variant(name: str, options: dict, cached: bool, args, pairs) -> list[dict]:
    """The variant's row (with its scores), then, if ``cached``, the same scorer's row with a warm passage cache."""
    from pipeline.scorers.cross_encoder import CrossEncoderScorer
    from pipeline.scorers.token_cache import TokenCache

    start = time.perf_counter()
    scorer = CrossEncoderScorer(args.model, device=args.device, max_length=args.max_length,
                                **{"packed_tokens": args.packed_tokens, **options})
    warm = pairs[: args.warm_pairs]
    scorer.score_pairs(warm)  # compile, tokenizer child, allocator
    scorer.score_pairs(warm)
    ready_s = time.perf_counter() - start
    encoded = scorer.encode(pairs)
    repeats = 1 if name == REFERENCE else args.repeats
    fwd, _ = times(lambda: scorer.score_encoded(encoded), repeats)
    e2e, scores = times(lambda: scorer.score_pairs(pairs), repeats)
    if args.profile and name == "packed":
        profile(scorer, encoded[: args.profile])
    rows = [{"variant": name, "fast_path": scorer.fast_path(), "ready_s": round(ready_s, 1),
             "forward_pairs_per_s": rates(len(pairs), fwd), "end_to_end_pairs_per_s": rates(len(pairs), e2e),
             "scores": list(scores)}]
    if cached:
        scorer.token_cache = TokenCache(10**6)
        scorer.cache_passages([p for _, p in pairs])  # each passage tokenized once ("at indexing time"): queries only below
        e2e, scores = times(lambda: scorer.score_pairs(pairs), args.repeats)
        rows.append({**rows[0], "variant": f"{name} cached", "fast_path": scorer.fast_path(),
                     "end_to_end_pairs_per_s": rates(len(pairs), e2e), "token_cache": scorer.token_cache.stats(),
                     "scores": list(scores)})
    for row in rows:
        if scorer.precision_note:
            row["note"] = scorer.precision_note
        print(json.dumps({k: v for k, v in row.items() if k != "scores"}), flush=True)
    return rows  # the scorer goes with this frame (main collects before the next variant)


def profile(scorer, encoded) -> None:
    """The CUDA kernels of one ``score_encoded`` call over ``encoded`` pairs, by total time (top 20)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        scorer.score_encoded(encoded)
        sync()
    print(f"profile of {len(encoded)} pairs ({scorer.fast_path()}):")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=70), flush=True)


def compare(owners, base: list[float], other: list[float], k: int = 10) -> dict:
    """Per query: the top ``k`` of ``other`` against ``base``'s (same set, same order), score differences."""
    by_query: dict[str, list[int]] = {}
    for i, (qid, _) in enumerate(owners):
        by_query.setdefault(qid, []).append(i)
    base_a, other_a = np.asarray(base), np.asarray(other)
    same_set = same_order = 0
    differing = []
    for qid, idx in by_query.items():
        idx = np.asarray(idx)
        top_b = idx[np.argsort(-base_a[idx], kind="stable")[:k]]
        top_o = idx[np.argsort(-other_a[idx], kind="stable")[:k]]
        same_set += set(top_b.tolist()) == set(top_o.tolist())
        same_order += top_b.tolist() == top_o.tolist()
        if top_b.tolist() != top_o.tolist() and len(differing) < 5:
            ranked = np.sort(base_a[idx])[::-1]
            gap = float(ranked[k - 1] - ranked[k]) if len(ranked) > k else None
            differing.append({"query": qid, "baseline_gap_at_rank_10": gap,
                              "min_gap_in_baseline_top_11": float(np.min(-np.diff(ranked[: k + 1])))})
    diff = np.abs(base_a - other_a)
    return {"queries": len(by_query), "top10_same_set": same_set, "top10_same_order": same_order,
            "max_abs_score_diff": float(diff.max()), "mean_abs_score_diff": float(diff.mean()),
            "first_differing": differing}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/ce-minilm"))
    p.add_argument("--bundle", type=Path, default=Path(".cache/ce/scifact/eval-test.json.gz"))
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--queries", type=int, default=None, help="first N queries of the bundle (default: all)")
    p.add_argument("--depth", type=int, default=100, help="BM25 candidates per query")
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warm-pairs", type=int, default=8192)
    p.add_argument("--packed-tokens", type=int, default=131072, help="real tokens per packed forward pass")
    p.add_argument("--variants", nargs="*", default=None,
                   help=f"a subset of {list(VARIANTS)}, '-' for ' ' (padded always runs; default {DEFAULT_VARIANTS})")
    p.add_argument("--profile", type=int, default=0, help="profile the packed variant's kernels over this many pairs")
    p.add_argument("--no-cached", action="store_true", help="skip the warm passage cache rows")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)

    import torch

    from benchmarks.ce_throughput import load_pairs, ndcg
    from pipeline.scorers.packed_bert import attention_kind

    pairs, owners, qrels = load_pairs(args.bundle, args.queries, depth=args.depth)
    gpu = args.device == "cuda"
    base = GPU_BASE if gpu else dict(precision="fp32", batch_size=8)
    wanted = [n.replace("-", " ").replace("_", " ") for n in (args.variants or DEFAULT_VARIANTS)]  # packed-fp16 = "packed fp16"
    names = ["padded", *[n for n in wanted if n != "padded"]]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
    result: dict = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__,
                    "cpus": len(os.sched_getaffinity(0)), "pairs": len(pairs), "queries": len(qrels),
                    "attention": attention_kind(args.device, torch.bfloat16 if gpu else torch.float32), "rows": []}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)
    scores: dict[str, list[float]] = {}
    for name in names:
        options, cached = VARIANTS[name]
        options = {**base, **options}
        if not gpu:
            options["compile"] = False  # a CPU check of the path, not of the compiler
        try:
            rows = run_variant(name, options, cached and not args.no_cached, args, pairs)
        except Exception as exc:  # noqa: BLE001 - report the variant that failed, keep the others
            rows = [{"variant": name, "failed": f"{type(exc).__name__}: {exc}"[:400]}]
            print(json.dumps(rows[0]), flush=True)
        gc.collect()
        for row in rows:
            if "scores" in row:
                scores[row["variant"]] = row.pop("scores")
            result["rows"].append(row)
    if "padded" in scores:
        ref = result["rows"][0]
        for row in result["rows"][1:]:
            if row["variant"] in scores:
                for kind in ("forward_pairs_per_s", "end_to_end_pairs_per_s"):
                    row[kind.replace("pairs_per_s", "vs_padded")] = round(row[kind]["median"] / ref[kind]["median"], 3)
                row["ranking_vs_padded"] = compare(owners, scores["padded"], scores[row["variant"]])
        if REFERENCE in scores:  # how far each variant (the baseline too) is from the fp32 scores
            for row in result["rows"]:
                if row["variant"] in scores and row["variant"] != REFERENCE:
                    row["ranking_vs_reference"] = compare(owners, scores[REFERENCE], scores[row["variant"]])
        try:
            result["ndcg10"] = {n: round(ndcg(owners, s, qrels), 4) for n, s in scores.items()}
        except Exception as exc:  # noqa: BLE001 - ir-measures missing: the rankings above still compare
            result["ndcg10"] = f"not computed: {type(exc).__name__}: {exc}"[:200]
    print_table(result)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)
    return result


def print_table(result: dict) -> None:
    print(f"\n{result['pairs']} pairs, {result['device']}, torch {result['torch']}, attention {result['attention']}")
    print(f"{'variant':<15} {'forward med/best':>18} {'e2e med/best':>16} {'fwd x':>6} {'e2e x':>6}  "
          "top10 same set/order  max|diff|  (vs padded, then vs fp32 when measured)")
    for row in result["rows"]:
        if "failed" in row:
            print(f"{row['variant']:<15} failed: {row['failed'][:100]}")
            continue
        f, e = row["forward_pairs_per_s"], row["end_to_end_pairs_per_s"]
        r = row.get("ranking_vs_padded")
        rank = f"{r['top10_same_set']}/{r['top10_same_order']} of {r['queries']}  {r['max_abs_score_diff']:.4f}" if r else "(baseline)"
        ref = row.get("ranking_vs_reference")
        rank += f"  vs fp32: {ref['top10_same_set']}/{ref['top10_same_order']} {ref['max_abs_score_diff']:.4f}" if ref else ""
        print(f"{row['variant']:<15} {f['median']:>8}/{f['best']:<9} {e['median']:>7}/{e['best']:<8} "
              f"{row.get('forward_vs_padded', 1.0):>6} {row.get('end_to_end_vs_padded', 1.0):>6}  {rank}", flush=True)


if __name__ == "__main__":  # the tokenizer child is spawned: the module must not run on import
    main()
