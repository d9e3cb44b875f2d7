"""Approximate search vs exact: recall@10, latency and memory of HNSW and IVF-PQ against Flat.

Two corpora, measured in the same run against exact inner-product search (``Flat``):

- ``scifact``: the published MiniLM vectors of SciFact (``python -m indexer build --dataset
  ../shared/data/scifact --index minilm`` first) and its 300 test queries, encoded here;
- ``synthetic``: N (default 1M) 384-d unit vectors with a low-rank, clustered structure (a
  64-d Gaussian mixture of 1,000 clusters projected to 384-d, plus isotropic noise), which
  resembles sentence embeddings more than i.i.d. noise does; queries from the same distribution.

IVF/PQ is trained on a sample (``--train``). Latency is one query at a time on one thread
(median and p95 over 100 queries); QPS is a 1,000-query batch on ``--threads`` threads; memory is the size of
the serialized index. Recall@10 = |ANN top-10 ∩ exact top-10| / 10, averaged over queries.

    python -m benchmarks.ann_recall                       # both corpora, 1M synthetic vectors
    python -m benchmarks.ann_recall --n 200000 --skip-scifact
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

K = 10


def synthetic(n: int, nq: int, dim: int = 384, seed: int = 0, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """``n`` corpus and ``nq`` query unit vectors: clustered 64-d latents projected to ``dim`` plus noise."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((64, dim)).astype(np.float32) / 8
    centers = rng.standard_normal((1000, 64)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        z = centers[rng.integers(0, len(centers), m)] + 0.6 * rng.standard_normal((m, 64)).astype(np.float32)
        x = z @ basis + 0.15 * rng.standard_normal((m, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    xb = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        xb[start : start + chunk] = draw(min(chunk, n - start))
    return xb, draw(nq)


def scifact(index_root: Path, dataset: Path) -> tuple[np.ndarray, np.ndarray]:
    """Published SciFact MiniLM vectors and the test queries' vectors."""
    import faiss

    from eval.runner import judged_queries
    from pipeline.encoders.bi_encoders import load_encoder
    from pipeline.storage.index_store import resolve

    folder, manifest = resolve(index_root, "scifact", "minilm")
    index = faiss.read_index(str(folder / manifest.params["index_file"]))
    xb = index.reconstruct_n(0, index.ntotal)
    queries, _ = judged_queries(dataset, "test")
    xq = load_encoder("minilm", "cpu").encode_queries([q.text for q in queries])
    return np.ascontiguousarray(xb, dtype=np.float32), np.ascontiguousarray(xq, dtype=np.float32)


def build(factory: str, xb: np.ndarray, train: int, threads: int):
    from indexer.dense import make_faiss_index

    start = time.perf_counter()
    index = make_faiss_index(xb, factory, train_size=train, threads=threads)
    return index, time.perf_counter() - start


def index_bytes(index) -> int:
    import faiss

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index")
        faiss.write_index(index, path)
        return os.path.getsize(path)


def measure(index, xq: np.ndarray, truth: np.ndarray | None, threads: int, single: int = 100) -> dict[str, float]:
    import faiss

    faiss.omp_set_num_threads(threads)
    start = time.perf_counter()
    _, ids = index.search(xq, K)
    qps = len(xq) / (time.perf_counter() - start)
    faiss.omp_set_num_threads(1)
    lat = []
    for q in xq[:single]:
        t = time.perf_counter()
        index.search(q[None, :], K)
        lat.append((time.perf_counter() - t) * 1000)
    faiss.omp_set_num_threads(threads)
    recall = 1.0 if truth is None else float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, truth, strict=True)]))
    return {"recall": recall, "p50": float(np.median(lat)), "p95": float(np.percentile(lat, 95)), "qps": qps, "ids": ids}


def run_corpus(name: str, xb: np.ndarray, xq: np.ndarray, configs: list[tuple[str, str, list[int]]], train: int, threads: int) -> list[str]:
    import faiss

    rows = []
    exact, secs = build("Flat", xb, train, threads)
    base = measure(exact, xq, None, threads)
    truth, flat_mb = base.pop("ids"), exact.ntotal * exact.code_size / 2**20  # Flat: the raw float32 vectors
    rows.append(_row(name, len(xb), "Flat (exact)", "-", base, flat_mb, flat_mb, secs, base["p50"]))
    del exact
    for factory, param, values in configs:
        index, secs = build(factory, xb, train, threads)
        mb = index_bytes(index) / 2**20
        space = faiss.ParameterSpace()
        for value in values:
            space.set_index_parameter(index, param, value)
            m = measure(index, xq, truth, threads)
            rows.append(_row(name, len(xb), factory, f"{param}={value}", m, mb, flat_mb, secs, base["p50"]))
        del index
    return rows


def _row(corpus, n, factory, param, m, mb, flat_mb, build_s, flat_p50) -> str:
    return (f"| {corpus} | {n:,} | {factory} | {param} | {m['recall']:.3f} | {m['p50']:.2f} | {m['p95']:.2f} | "
            f"{flat_p50 / m['p50']:.1f}x | {m['qps']:,.0f} | {mb:,.1f} | {mb / flat_mb:.3f} | {build_s:.1f} |")


def main() -> None:
    from pipeline.core.settings_paths import default_data_dir, default_index_root

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic corpus size (0 = skip)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--nlist", type=int, default=1024, help="IVF lists for the synthetic corpus")
    ap.add_argument("--train", type=int, default=50_000, help="IVF/PQ training sample")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-scifact", action="store_true")
    ap.add_argument("--skip-hnsw", action="store_true", help="no HNSW on the synthetic corpus (its build is the slow part)")
    ap.add_argument("--skip-ivf", action="store_true", help="no IVF-PQ on the synthetic corpus")
    ap.add_argument("--index-root", type=Path, default=default_index_root())
    ap.add_argument("--dataset", type=Path, default=default_data_dir() / "scifact")
    args = ap.parse_args()

    header = ("| corpus | vectors | index | search | recall@10 | p50 ms | p95 ms | p50 speed-up | QPS (batch) | MB | "
              "MB / Flat | build s |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows: list[str] = []
    if not args.skip_scifact:
        xb, xq = scifact(args.index_root, args.dataset)
        rows += run_corpus("SciFact", xb, xq, [("HNSW32", "efSearch", [16, 64, 128]), ("IVF64,PQ48", "nprobe", [4, 16])],
                           args.train, args.threads)
        print(header, *rows, sep="\n", flush=True)
    if args.n:
        start = time.perf_counter()
        xb, xq = synthetic(args.n, args.queries)
        print(f"\nsynthetic: {args.n:,} x 384 generated in {time.perf_counter() - start:.1f}s", flush=True)
        configs = [] if args.skip_hnsw else [("HNSW32", "efSearch", [16, 64, 128])]
        if not args.skip_ivf:
            configs.append((f"IVF{args.nlist},PQ48", "nprobe", [8, 32]))
        rows += run_corpus("synthetic", xb, xq, configs, args.train, args.threads)
    print("\n" + header, *rows, sep="\n")


if __name__ == "__main__":
    main()
