"""End-to-end GPU scoring (text in, scores out) of one scorer configuration, against its own forward passes.

Builds one bf16 :class:`~pipeline.stages.cross_encoder.CrossEncoderScorer`, warms it up, then times
``score_encoded`` over pre-tokenized pairs (best of 2) and ``score`` over the texts (median and best
of 4) on every pair of the bundle. One process per configuration, so that ``RAYON_NUM_THREADS`` (the
tokenizer child's pool, inherited at spawn) can be varied from the shell:

    for c in 1024 4096; do python -m benchmarks.ce_e2e_variants --chunk-pairs $c; done
    RAYON_NUM_THREADS=8 python -m benchmarks.ce_e2e_variants --threads 4 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/ce-minilm"))
    p.add_argument("--bundle", type=Path, default=Path(".cache/ce/scifact/eval-test.json.gz"))
    p.add_argument("--chunk-pairs", type=int, default=1024, help="largest tokenization slice (texts)")
    p.add_argument("--first-slice", type=int, default=128, help="passages in the first tokenization slice")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile, padded widths multiples of 64")
    p.add_argument("--slices-ahead", type=int, default=1, help="tokenization slices in flight (0: all at once)")
    p.add_argument("--run-ahead", type=int, default=0, help="forward passes queued on the GPU at most (0: no limit)")
    args = p.parse_args(argv)

    from benchmarks.ce_throughput import load_pairs
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    pairs, _, _ = load_pairs(args.bundle, None)
    scorer = CrossEncoderScorer(args.model, device="cuda", precision="bf16", batch_size=512, batch_tokens=512 * 512,
                                compile=args.compile, pad_multiple=64 if args.compile else 8,
                                chunk_pairs=args.chunk_pairs, first_slice=args.first_slice, threads=args.threads, slices_ahead=args.slices_ahead,
                                run_ahead=args.run_ahead)
    scorer.score_pairs(pairs[:8192])  # warm-up: compile, tokenizer child, allocator
    scorer.score_pairs(pairs[:8192])
    encoded = scorer.encode(pairs)

    def times(fn, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return out

    forward = times(lambda: scorer.score_encoded(encoded), 2)
    e2e = times(lambda: scorer.score_pairs(pairs), 4)
    print(json.dumps({"chunk_pairs": args.chunk_pairs, "first_slice": args.first_slice, "threads": args.threads, "compile": args.compile,
                      "slices_ahead": args.slices_ahead, "run_ahead": args.run_ahead,
                      "rayon_threads": os.environ.get("RAYON_NUM_THREADS"), "pairs": len(pairs),
                      "forward_pairs_per_s": round(len(pairs) / min(forward)),
                      "end_to_end_median_pairs_per_s": round(len(pairs) / statistics.median(e2e)),
                      "end_to_end_best_pairs_per_s": round(len(pairs) / min(e2e))}), flush=True)


if __name__ == "__main__":  # the tokenizer child is spawned: the module must not run on import
    main()
