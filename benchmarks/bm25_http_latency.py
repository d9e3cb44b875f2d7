"""BM25 top-10 latency: through the HTTP service vs ``LuceneSearcher`` in-process, in one run.

Starts the service (uvicorn, one worker) on a free loopback port over an already
published collection, sends every SciFact query one at a time over a keep-alive
connection, then runs the same searches on ``LuceneSearcher`` in this process.
Prints median and p99 of each and the ratio HTTP / in-process (target: median <= 2x).

    python -m benchmarks.bm25_http_latency --dataset ../shared/data/scifact [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from indexer.build import ensure_indexes
from pipeline.core.settings_paths import default_config_path, default_index_root
from pipeline.registry import load_config
from pipeline.runtime.java import start_jvm
from pipeline.storage.collection import dataset_name, load_queries
from pipeline.storage.index_store import LUCENE_DIR, resolve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(ms: list[float]) -> tuple[float, float]:
    arr = np.asarray(ms)
    return float(np.median(arr)), float(np.percentile(arr, 99))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--rounds", type=int, default=3, help="passes over the queries (after one warm-up pass)")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    collection = dataset_name(args.dataset)
    config = load_config(default_config_path())
    root = default_index_root()
    ensure_indexes(args.dataset, collection, config, ["lucene"], root)
    queries = [q.text for q in load_queries(args.dataset).values()]

    port = free_port()
    env = {**os.environ, "SEARCH_COLLECTIONS": json.dumps([collection]), "SEARCH_PIPELINES": json.dumps(["bm25"]),
           "SEARCH_INDEX_ROOT": str(root)}
    server = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"], env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(120):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            else:
                raise SystemExit("service did not become ready")

        # The lightest keep-alive client, so that the figure is the service's, not httpx's.
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"content-type": "application/json"}

        def http_search(q: str) -> None:
            conn.request("POST", "/search", json.dumps({"query": q, "k": args.k, "pipeline": "bm25"}), headers)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise SystemExit(f"HTTP {r.status}: {body[:200]!r}")

        http_ms = timed(http_search, queries, args.rounds)
        conn.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

    start_jvm()
    from pyserini.search.lucene import LuceneSearcher

    folder, _ = resolve(root, collection, "lucene")
    searcher = LuceneSearcher(str(folder / LUCENE_DIR))
    searcher.set_bm25(0.9, 0.4)
    local_ms = timed(lambda q: searcher.search(q, k=args.k), queries, args.rounds)

    hm, hp = percentiles(http_ms)
    lm, lp = percentiles(local_ms)
    print(f"queries: {len(queries)} x {args.rounds} rounds, k={args.k}, collection={collection}")
    print(f"{'path':<28}{'median ms':>10}{'p99 ms':>10}")
    print(f"{'HTTP POST /search (bm25)':<28}{hm:>10.3f}{hp:>10.3f}")
    print(f"{'LuceneSearcher in-process':<28}{lm:>10.3f}{lp:>10.3f}")
    print(f"ratio HTTP/in-process: median {hm / lm:.2f}x, p99 {hp / lp:.2f}x (target: median <= 2x)")


def timed(fn, queries: list[str], rounds: int) -> list[float]:
    for q in queries:  # warm-up pass
        fn(q)
    out = []
    for _ in range(rounds):
        for q in queries:
            t = time.perf_counter()
            fn(q)
            out.append((time.perf_counter() - t) * 1000)
    return out


if __name__ == "__main__":
    main()
