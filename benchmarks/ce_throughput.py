"""Cross-encoder throughput: our scorer against plain fp32 ``CrossEncoder.predict``, in one run.

Pairs are SciFact test queries with their BM25 top-100 (from a mined eval bundle, so the GPU
machine needs no index). Every timing includes tokenization (end to end, text in, scores out).

* ``--device cpu``: the same 100 candidates of one query, scored ``--repeats`` times by
  ``CrossEncoder.predict`` (fp32, batch 32) and by our scorer in fp32, int8 and bf16 (interleaved);
  prints pairs/s and the ratios (target >= 2.5x). nDCG@10 over ``--ndcg-queries`` queries x 100
  candidates, and the score correlation with fp32 (target: lose at most 0.005).
* ``--device cuda``: ``CrossEncoder.predict`` fp32 batch 32 on a slice, then the bf16 scorer on
  every pair (eager, then ``torch.compile``), and 8 threads of 100-pair requests through the
  micro-batcher against the same requests one at a time.

    python -m benchmarks.ce_throughput --model models/ce-minilm --bundle .cache/ce/scifact/eval-test.json --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_pairs(bundle_path: Path, queries: int | None, depth: int = 100, role: str | None = None):
    from training.cross_encoder.data.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    rows = bundle.role(role) if role else bundle.queries
    rows = rows[:queries] if queries is not None else rows
    pairs, owners = [], []
    for q in rows:
        for doc, _ in q.bm25[:depth]:
            pairs.append((q.text, bundle.docs[doc]))
            owners.append((q.qid, doc))
    return pairs, owners, {q.qid: q.qrels for q in rows}


def ndcg(owners, scores, qrels) -> float:
    from training.cross_encoder.ranking_metrics import ndcg_at_k

    run: dict[str, dict[str, float]] = {}
    for (qid, doc), s in zip(owners, scores, strict=True):
        run.setdefault(qid, {})[doc] = float(s)
    return ndcg_at_k(qrels, run)


def timed(fn, repeats: int) -> tuple[float, list]:
    """Median seconds of ``repeats`` calls after one warm-up call; returns (seconds, last output)."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def baseline_model(model: Path, device: str, max_length: int):
    """Plain ``CrossEncoder`` in fp32 (the saved weights are bf16: ask for fp32 explicitly)."""
    import torch
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(model), device=device, max_length=max_length, model_kwargs={"dtype": torch.float32})


def cpu_bench(args) -> dict:
    import torch

    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    torch.set_num_threads(args.threads)
    pairs, owners, qrels = load_pairs(args.bundle, max(args.ndcg_queries, 1), role=args.role)  # query 0 is always timed
    one = pairs[:100]
    st = baseline_model(args.model, "cpu", args.max_length)
    variants = {p: dict(precision=p) for p in ("fp32", "int8", "bf16")}
    if args.cpu_compile:
        variants["int8 compile"] = dict(precision="int8", compile=True)
    ours = {name: CrossEncoderScorer(args.model, device="cpu", max_length=args.max_length, threads=args.threads,
                                     batch_size=args.batch_size, **kw) for name, kw in variants.items()}
    runs = {"st": lambda: st.predict(one, batch_size=32, show_progress_bar=False),
            **{p: (lambda s=s: s.score_pairs(one)) for p, s in ours.items()}}
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    st.predict(one[:8], batch_size=32, show_progress_bar=False)  # warm-up (allocations, first-call costs)
    for scorer in ours.values():
        scorer.score_pairs(one[:8])
    for _ in range(args.repeats):  # interleaved, so that a shared machine's load hits all three alike
        for name, fn in runs.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    result = {"device": "cpu", "threads": args.threads, "pairs": len(one), "repeats": args.repeats,
              "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
              "pairs_per_s": {"CrossEncoder.predict fp32": len(one) / med["st"],
                              **{f"ours {p}": len(one) / med[p] for p in ours}},
              "speedup_vs_predict": {p: med["st"] / med[p] for p in ours},
              "cpu_seconds": {k: [round(t, 3) for t in v] for k, v in cpu.items()},
              "speedup_vs_predict_cpu_time": {p: med_cpu["st"] / med_cpu[p] for p in ours},  # robust to other jobs
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "precision_notes": {p: s.precision_note for p, s in ours.items() if s.precision_note}}
    print(json.dumps(result), flush=True)  # the throughput part, before the (slower) quality check
    if args.ndcg_queries:
        # the reference: predict itself, or our fp32 path (the same scores to 1e-5, tests/test_cross_encoder_stage.py,
        # at 1.1x its speed: the whole test split in less time)
        if args.ndcg_reference == "predict":
            ref_name, ref = "CrossEncoder.predict fp32", st.predict(pairs, batch_size=32, show_progress_bar=False)
        else:
            ref_name, ref = "ours fp32", ours["fp32"].score_pairs(pairs)
        result["ndcg10"] = {"queries": len(qrels), ref_name: ndcg(owners, ref, qrels)}
        for p in (name for name in ours if name != "fp32" and (not args.ndcg_variants or name in args.ndcg_variants)):
            got = ours[p].score_pairs(pairs)
            result["ndcg10"][f"ours {p}"] = ndcg(owners, got, qrels)
            result[f"ndcg10_loss_{p}"] = result["ndcg10"][ref_name] - result["ndcg10"][f"ours {p}"]
            result[f"score_correlation_{p}"] = float(np.corrcoef(ref, got)[0, 1])
            print(json.dumps({p: result["ndcg10"][f"ours {p}"], "reference": result["ndcg10"][ref_name]}), flush=True)
    return result


def gpu_bench(args) -> dict:
    import torch

    from pipeline.runtime.micro_batch import MicroBatcher
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    pairs, _, _ = load_pairs(args.bundle, None)
    result: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "pairs": len(pairs), "pairs_per_s": {}}
    st = baseline_model(args.model, "cuda", args.max_length)
    base = pairs[: args.baseline_pairs]
    t, _ = timed(lambda: st.predict(base, batch_size=32, show_progress_bar=False), 1)
    result["pairs_per_s"]["CrossEncoder.predict fp32 b32"] = len(base) / t
    st = None  # free the baseline before timing ours
    tokens = CrossEncoderScorer(args.model, device="cuda", precision="bf16", max_length=args.max_length).encode(pairs[:2000])
    result["mean_tokens_per_pair"] = sum(len(q) + len(p) + 3 for q, p in tokens) / len(tokens)
    variants = [("bf16 eager b256", dict(batch_size=256, batch_tokens=256 * 512, compile=False)),
                ("bf16 eager b512", dict(batch_size=512, batch_tokens=512 * 512, compile=False)),
                ("bf16 compile b256", dict(batch_size=256, batch_tokens=256 * 512, compile=True))]
    best = None
    for name, kw in variants:
        try:
            scorer = CrossEncoderScorer(args.model, device="cuda", precision="bf16", max_length=args.max_length, **kw)
            scorer.score_pairs(pairs[:4096])  # compile / autotune outside the timing
            t, _ = timed(lambda s=scorer: s.score_pairs(pairs), args.repeats)
            result["pairs_per_s"][f"ours {name}"] = len(pairs) / t
            if best is None or len(pairs) / t > best[0]:
                best = (len(pairs) / t, scorer)
        except Exception as exc:  # noqa: BLE001 - report the variant that failed, keep the others
            result["pairs_per_s"][f"ours {name}"] = f"failed: {type(exc).__name__}: {exc}"[:300]
        if name == "bf16 eager b512" and best:  # before the (slow to compile) last variant
            result["micro_batch"] = concurrency(best[1], pairs, MicroBatcher)
        print(json.dumps(result["pairs_per_s"]), flush=True)
    base_rate = result["pairs_per_s"]["CrossEncoder.predict fp32 b32"]
    result["best_speedup_vs_predict"] = best[0] / base_rate if best else None
    return result


def gpu_profile(args) -> dict:
    """Where the time goes on a GPU: tokenization alone, forward passes alone (pre-tokenized),
    and end to end, for attention implementations, batch sizes, tokenization slices and padding
    multiples; plus plain ``CrossEncoder.predict`` fp32 on a slice and the micro-batcher, in the same run."""
    import torch

    from pipeline.runtime.micro_batch import MicroBatcher
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    pairs, _, _ = load_pairs(args.bundle, None)
    result: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "pairs": len(pairs),
                    "cpus": len(os.sched_getaffinity(0)), "rayon_threads": os.environ.get("RAYON_NUM_THREADS"), "rows": []}
    if not args.only or "predict" in args.only:
        st = baseline_model(args.model, "cuda", args.max_length)
        base = pairs[: args.baseline_pairs]
        t, _ = timed(lambda: st.predict(base, batch_size=32, show_progress_bar=False), 1)
        result["predict_fp32_b32_pairs_per_s"] = len(base) / t
        print(json.dumps({"predict_fp32_b32_pairs_per_s": len(base) / t}), flush=True)
        del st
    b512 = dict(attn_implementation="sdpa", batch_size=512, batch_tokens=512 * 512)
    configs = [("thread b512", dict(b512, tokenize_process=False)),  # tokenization in a helper thread (until 2026-11-28)
               ("thread b512 switch 0.5ms", dict(b512, tokenize_process=False, switch_interval=0.0005)),
               ("process b512", b512),  # the default: tokenization in a child process (pipeline/runtime/tokenize_worker.py)
               ("process b256", dict(b512, batch_size=256, batch_tokens=256 * 512)),
               ("hf process b512", dict(b512, fast=False)),  # transformers' BertModel instead of pipeline/scorers/fast_bert.py
               ("process b512 m64 compile", dict(b512, pad_multiple=64, compile=True))]
    best = None
    for name, kw in configs:
        if args.only and name not in args.only:
            continue
        kw = dict(kw)
        switch = kw.pop("switch_interval", None)
        previous = sys.getswitchinterval()
        try:
            if switch:
                sys.setswitchinterval(switch)  # the GIL's hand-over interval (default 5 ms)
            scorer = CrossEncoderScorer(args.model, device="cuda", precision="bf16", max_length=args.max_length, **kw)
            scorer.score_pairs(pairs[:8192])  # warm-up / compile
            t_tok, encoded = timed(lambda s=scorer: s.encode(pairs), 1)
            t_fwd, _ = timed(lambda s=scorer, e=encoded: s.score_encoded(e), args.repeats)
            t_all, _ = timed(lambda s=scorer: s.score_pairs(pairs), args.repeats)
            row = {"config": name, "tokenize_pairs_per_s": len(pairs) / t_tok, "forward_pairs_per_s": len(pairs) / t_fwd,
                   "end_to_end_pairs_per_s": len(pairs) / t_all}
            if "predict_fp32_b32_pairs_per_s" in result:
                row["end_to_end_vs_predict"] = row["end_to_end_pairs_per_s"] / result["predict_fp32_b32_pairs_per_s"]
            if best is None or row["end_to_end_pairs_per_s"] > best[0]:
                best = (row["end_to_end_pairs_per_s"], name, scorer)
        except Exception as exc:  # noqa: BLE001 - keep the other rows
            row = {"config": name, "failed": f"{type(exc).__name__}: {exc}"[:300]}
        finally:
            sys.setswitchinterval(previous)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
    if args.micro_batch and best:
        result["micro_batch"] = {"config": best[1], **concurrency(best[2], pairs, MicroBatcher)}
        print(json.dumps(result["micro_batch"]), flush=True)
    return result


def concurrency(scorer, pairs, batcher_cls, threads: int = 8, per_request: int = 100, requests: int = 96) -> dict:
    """``requests`` 100-pair requests: one at a time vs ``threads`` callers sharing a micro-batcher
    (as in the stage: each caller tokenizes its own pairs, the batcher runs the forward passes)."""
    reqs = [pairs[(i * per_request) % len(pairs):][:per_request] for i in range(requests)]
    start = time.perf_counter()
    for r in reqs:
        scorer.score_pairs(r)
    sequential = time.perf_counter() - start
    batcher = batcher_cls(scorer.score_encoded, max_items=threads * per_request, max_wait_ms=2.0)
    work = list(reqs)
    lock = threading.Lock()

    def caller():
        while True:
            with lock:
                if not work:
                    return
                r = work.pop()
            batcher(scorer.encode(r), timeout=60)

    start = time.perf_counter()
    pool = [threading.Thread(target=caller) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    concurrent = time.perf_counter() - start
    batcher.close()
    return {"requests": requests, "pairs_per_request": per_request, "threads": threads,
            "sequential_req_per_s": requests / sequential, "micro_batched_req_per_s": requests / concurrent,
            "ratio": sequential / concurrent, "forward_batches": batcher.stats.batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/ce-minilm"))
    parser.add_argument("--bundle", type=Path, default=Path(".cache/ce/scifact/eval-test.json.gz"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--ndcg-queries", type=int, default=30, help="CPU: queries x 100 candidates for the nDCG check")
    parser.add_argument("--baseline-pairs", type=int, default=4096, help="GPU: pairs timed for CrossEncoder.predict")
    parser.add_argument("--profile", action="store_true", help="GPU: tokenization vs forward vs end to end, per config")
    parser.add_argument("--only", nargs="*", default=None,
                        help="--profile: only these configurations (names as printed; 'predict' for the baseline)")
    parser.add_argument("--micro-batch", action="store_true",
                        help="--profile: also 8 threads of 100-pair requests through the micro-batcher vs one at a time")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--role", choices=["train", "dev", "test"], default=None,
                        help="only the bundle's queries of this role (a train bundle's dev queries: --role dev)")
    parser.add_argument("--batch-size", type=int, default=None, help="CPU: pairs per forward pass of ours (default: the scorer's)")
    parser.add_argument("--cpu-compile", action="store_true", help="CPU: also time int8 under torch.compile")
    parser.add_argument("--ndcg-reference", choices=["predict", "fp32"], default="predict",
                        help="CPU: the scores the nDCG loss is measured against (fp32: our fp32 path, faster)")
    parser.add_argument("--ndcg-variants", nargs="*", default=None,
                        help="CPU: only these of ours in the nDCG check (names as printed, e.g. int8 'int8 compile')")
    args = parser.parse_args()
    emit(cpu_bench(args) if args.device == "cpu" else gpu_profile(args) if args.profile else gpu_bench(args), args.json_out)


def emit(result: dict, path: Path | None) -> None:
    """Print ``result`` as indented JSON and write it to ``path`` too, if given."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        path.write_text(text)


if __name__ == "__main__":
    main()
