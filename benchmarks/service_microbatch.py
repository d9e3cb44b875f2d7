"""Service throughput of ``bm25>>ce`` under 8 concurrent requests vs the same requests one at a time.

Starts the service (uvicorn, one worker, result cache off) on a free loopback port over the
published SciFact indexes, warms it up, then sends ``--requests`` distinct test queries
sequentially and, separately, the next ``--requests`` queries from ``--concurrency`` threads
(keep-alive clients). In the service concurrent requests reach the cross-encoder's micro-batcher
and share forward passes. Prints requests/s of both and the ratio (target >= 1.5x); every
response must be 200 and not ``degraded`` (a time-budget fallback would fake the speed-up).

    python -m benchmarks.service_microbatch --dataset ../shared/data/scifact --requests 24
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline.collection import dataset_name, load_qrels, load_queries
from pipeline.settings_paths import default_index_root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def search(conn: http.client.HTTPConnection, query: str, pipeline: str) -> dict:
    conn.request("POST", "/search", json.dumps({"query": query, "k": 10, "pipeline": pipeline}),
                 {"content-type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"HTTP {r.status}: {body[:300]!r}")
    return json.loads(body)


def wait_ready(port: int, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit("service did not become ready")


def run_sequential(port: int, queries: list[str], pipeline: str) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    degraded, start = 0, time.perf_counter()
    for q in queries:
        degraded += bool(search(conn, q, pipeline).get("degraded"))
    return time.perf_counter() - start, degraded


def run_concurrent(port: int, queries: list[str], pipeline: str, threads: int) -> tuple[float, int]:
    work, lock, degraded = list(queries), threading.Lock(), [0]

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                if not work:
                    return
                q = work.pop()
            bad = bool(search(conn, q, pipeline).get("degraded"))
            with lock:
                degraded[0] += bad

    pool = [threading.Thread(target=client) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start, degraded[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--pipeline", default="bm25>>ce")
    parser.add_argument("--requests", type=int, default=24, help="requests per mode (distinct queries)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--config", type=Path, default=None,
                        help="pipeline config for the service (default: configs/pipelines.yaml); on a slow shared CPU "
                             "pass one without time_budget_ms so that late reranks are not turned into fallbacks")
    args = parser.parse_args()

    collection = dataset_name(args.dataset)
    all_queries = load_queries(args.dataset)
    texts = [all_queries[q].text for q in load_qrels(args.dataset, "test")]
    if len(texts) < 2 * args.requests + 4:
        raise SystemExit(f"need {2 * args.requests + 4} test queries, have {len(texts)}")
    warm, seq_q, conc_q = texts[:4], texts[4 : 4 + args.requests], texts[4 + args.requests : 4 + 2 * args.requests]
    port = free_port()
    env = {**os.environ, "SEARCH_COLLECTIONS": json.dumps([collection]), "SEARCH_PIPELINES": json.dumps([args.pipeline]),
           "SEARCH_INDEX_ROOT": str(default_index_root()), "SEARCH_CACHE_TTL_S": "0", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", **({"SEARCH_CONFIG": str(args.config.resolve())} if args.config else {})}
    server = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"], env=env)
    try:
        wait_ready(port)
        run_concurrent(port, warm, args.pipeline, 2)  # loads, first forward passes
        t_seq, d_seq = run_sequential(port, seq_q, args.pipeline)
        t_con, d_con = run_concurrent(port, conc_q, args.pipeline, args.concurrency)
    finally:
        server.terminate()
        server.wait(timeout=60)
    seq, con = args.requests / t_seq, args.requests / t_con
    print(f"pipeline {args.pipeline} on {collection}: {args.requests} requests per mode, top-100 reranked each")
    print(f"{'mode':<34}{'req/s':>8}{'seconds':>9}{'degraded':>10}")
    print(f"{'one at a time':<34}{seq:>8.2f}{t_seq:>9.1f}{d_seq:>10}")
    print(f"{f'{args.concurrency} concurrent (micro-batched)':<34}{con:>8.2f}{t_con:>9.1f}{d_con:>10}")
    print(f"ratio concurrent/sequential: {con / seq:.2f}x (target >= 1.5x)")
    if d_seq or d_con:
        print("WARNING: some responses were degraded (reranker fell back): the ratio is not valid")


if __name__ == "__main__":
    main()
