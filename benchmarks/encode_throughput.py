"""Encoding throughput: the dense indexer's encoder path vs plain ``SentenceTransformer.encode``.

Same documents, same run, same batch size. Baselines: plain ``encode`` with the model as loaded
(float32), and on GPU also plain ``encode`` after ``model.half()``. The indexer path is
``indexer.dense.encode_corpus`` (token-length-sorted resumable shards, float16 on GPU), shard
files written included. Prints docs/s and the ratio to the float32 baseline, plus the lowest
cosine between the indexer's vectors and the baseline's (a correctness check).

    python -m benchmarks.encode_throughput --dataset ../shared/data/scifact --limit 256            # CPU
    python -m benchmarks.encode_throughput --dataset DIR --model MODEL_DIR --device cuda          # GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    from indexer.dense import document_text, encode_corpus
    from pipeline.encoders.bi_encoders import load_encoder, minilm_path
    from pipeline.storage.collection import iter_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--model", default="minilm", help="'minilm' or a sentence-transformers folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=0, help="first N documents (0 = all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per method (best is reported)")
    ap.add_argument("--shard-size", type=int, default=4096)
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    texts = [document_text(d) for d in iter_corpus(args.dataset)]
    texts = texts[: args.limit] if args.limit else texts
    folder = minilm_path() if args.model == "minilm" else Path(args.model)
    plain = SentenceTransformer(str(folder), device=args.device).float()  # float32 even from a float16 folder
    plain_half = None
    if args.device.startswith("cuda"):
        plain_half = SentenceTransformer(str(folder), device=args.device).half()
    indexer_encoder = load_encoder(args.model, args.device, batch_size=args.batch_size)

    def run_plain(model) -> np.ndarray:
        return model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)

    def run_indexer() -> np.ndarray:
        with tempfile.TemporaryDirectory() as work:
            return encode_corpus(indexer_encoder, texts, Path(work), args.shard_size, desc="indexer")

    methods = {"plain encode (float32)": lambda: run_plain(plain)}
    if plain_half is not None:
        methods["plain encode (model.half())"] = lambda: run_plain(plain_half)
    methods[f"indexer encode_corpus ({str(indexer_encoder.model.dtype).replace('torch.', '')})"] = run_indexer

    warm = texts[: args.batch_size * 2]  # warm-up: kernels, allocator, tokenizer caches
    plain.encode(warm, batch_size=args.batch_size)
    if plain_half is not None:
        plain_half.encode(warm, batch_size=args.batch_size)
    indexer_encoder.encode_documents(warm)

    times: dict[str, list[float]] = {name: [] for name in methods}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):  # interleaved, so load changes hit every method alike
        for name, fn in methods.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            vectors[name] = np.asarray(fn(), dtype=np.float32)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)

    base_name = next(iter(methods))
    base_rate = len(texts) / min(times[base_name])
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\n{len(texts)} documents of {args.dataset.name}, batch {args.batch_size}, {device_name}, "
          f"best of {args.repeats} (median in brackets)")
    print(f"{'method':<40} {'seconds':>8} {'docs/s':>9} {'ratio':>6} {'min cosine vs float32':>22}")
    for name in methods:
        best = min(times[name])
        rate = len(texts) / best
        cos = float(np.min(np.sum(vectors[name] * vectors[base_name], axis=1)))
        print(f"{name:<40} {best:8.2f} {rate:9.1f} {rate / base_rate:6.2f} {cos:22.5f}"
              f"   [{len(texts) / statistics.median(times[name]):.1f} docs/s]")


if __name__ == "__main__":
    main()
