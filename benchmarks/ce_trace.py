"""Where one pipelined cross-encoder call spends its time: a diagnostic for the GPU path.

End to end on the GPU still equals tokenization + forward passes run one after the other (README,
GPU throughput). This runs ``scorer.score_pairs(pairs)`` once under ``torch.profiler`` and prints: wall time,
GPU busy time (union of kernel intervals), the idle gaps between kernels longer than ``--gap-ms``, and
the main thread's time in each step of the pipelined path (waiting for tokenized slices, building and
launching batches, collecting scores). Options test the suspects: ``--torch-threads`` (torch's CPU
thread pool competing with the tokenizer's), ``--thread-tokenizer`` (helper thread instead of the
child process), ``RAYON_NUM_THREADS=N`` in the environment (the tokenizer's pool).

    python -m benchmarks.ce_trace --model models/ce-minilm --bundle .cache/ce/scifact/eval-test.json.gz
    python -m benchmarks.ce_trace --torch-threads 1 --json-out trace-t1.json

On a CPU (``--device cpu``) the pipelined path is forced on, for a smoke run; there are no kernels to time.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.ce_throughput import emit, load_pairs

STEPS = ("_ready_chunks", "_result", "_pairs_from", "_launch", "_collect")


def instrument(scorer, spent: dict[str, float]) -> None:
    """Wrap the scorer's pipeline steps so that their wall time adds up in ``spent``."""
    for name in STEPS:
        original = getattr(scorer, name)

        def wrapper(*args, _original=original, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - start

        setattr(scorer, name, wrapper)


def busy_and_gaps(intervals: list[tuple[float, float]], gap_us: float) -> tuple[float, list[float]]:
    """Union length of ``(start, end)`` intervals (us) and the gaps longer than ``gap_us`` between them.

    >>> busy_and_gaps([(0, 10), (5, 20), (40, 50)], gap_us=5)
    (30.0, [20])
    """
    busy, gaps, end = 0.0, [], None
    for s, e in sorted(intervals):
        if end is None or s > end:
            if end is not None and s - end > gap_us:
                gaps.append(s - end)
            busy += e - s
            end = e
        elif e > end:
            busy += e - end
            end = e
    return busy, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/ce-minilm"))
    parser.add_argument("--bundle", type=Path, default=Path(".cache/ce/scifact/eval-test.json.gz"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--queries", type=int, default=None, help="first N queries of the bundle (default all)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--thread-tokenizer", action="store_true")
    parser.add_argument("--gap-ms", type=float, default=1.0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    pairs, _, _ = load_pairs(args.bundle, args.queries)
    scorer = CrossEncoderScorer(args.model, device=args.device, precision="bf16" if args.device == "cuda" else "fp32",
                                batch_size=args.batch_size, batch_tokens=args.batch_size * 512, compile=args.compile,
                                pad_multiple=64 if args.compile else 8, tokenize_process=not args.thread_tokenizer)
    scorer.pipelined = True
    scorer.score_pairs(pairs[:8192])  # warm-up (and compile)
    spent: dict[str, float] = defaultdict(float)
    instrument(scorer, spent)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        scorer.score_pairs(pairs)
        if args.device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    kernels = [(e.time_range.start, e.time_range.end) for e in prof.events()
               if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    busy_us, gaps = busy_and_gaps(kernels, args.gap_ms * 1000)
    result = {"pairs": len(pairs), "device": args.device, "batch_size": args.batch_size, "compile": args.compile,
              "torch_threads": torch.get_num_threads(), "tokenizer": "thread" if args.thread_tokenizer else "process",
              "wall_s": wall, "pairs_per_s": len(pairs) / wall, "gpu_busy_s": busy_us / 1e6,
              "gpu_busy_fraction": busy_us / 1e6 / wall, "kernels": len(kernels),
              f"gaps_over_{args.gap_ms}ms": len(gaps), "gap_total_s": sum(gaps) / 1e6,
              "largest_gaps_ms": sorted((g / 1000 for g in gaps), reverse=True)[:10],
              "main_thread_s": {k: round(v, 4) for k, v in spent.items()}}
    emit(result, args.json_out)


if __name__ == "__main__":
    main()
