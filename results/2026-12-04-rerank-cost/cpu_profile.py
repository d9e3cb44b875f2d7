"""Where the served reranker's CPU time goes: one SciFact query's BM25 top 100, CPU defaults, torch profiler.

    python results/2026-12-04-rerank-cost/cpu_profile.py          # from the repository root, machine idle
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks.ce_throughput import load_pairs  # noqa: E402
from pipeline.scorers.cross_encoder import CrossEncoderScorer  # noqa: E402

pairs, _, _ = load_pairs(Path(".cache/ce/scifact/eval-test.json.gz"), 3, depth=100)
scorer = CrossEncoderScorer(Path("models/ce-minilm"), device="cpu")
encoded = scorer.encode(pairs[:100])
scorer.score_encoded(encoded)
start = time.perf_counter()
scorer.score_encoded(encoded)
print(f"{scorer.precision}, batch {scorer.batch_size}: 100 pairs in {time.perf_counter() - start:.3f} s")
with profile(activities=[ProfilerActivity.CPU]) as prof:
    scorer.score_encoded(encoded)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=45))
