"""Service throughput of ``bm25>>ce`` under 8 concurrent requests vs the same requests one at a time.

Starts the service (uvicorn, one worker, result cache off) on a free loopback port over the
published SciFact indexes, warms it up in both modes, then sends ``--requests`` distinct test
queries one at a time and the same queries from ``--concurrency`` threads (keep-alive clients),
``--rounds`` times alternately. In the service concurrent requests reach the cross-encoder's micro-batcher
and share forward passes. Prints requests/s of both per round and the median ratio (target >= 1.5x); every
response must be 200 and not ``degraded`` (a time-budget fallback would fake the speed-up).

    python -m benchmarks.service_microbatch --dataset ../shared/data/scifact --requests 24
    python -m benchmarks.service_microbatch --dataset ../shared/data/scifact --requests 128 --explain  # GPU machine
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline.core.settings_paths import default_index_root
from pipeline.storage.collection import dataset_name, load_qrels, load_queries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TIMINGS: dict[str, list[dict[str, float]]] = {}
"""Per mode, the ``timings_ms`` of every response (``explain``): where a request's time goes."""


EXPLAIN = False
"""Ask for ``explain`` (per-stage timings in every response; ``--explain``)."""


def search(conn: http.client.HTTPConnection, query: str, pipeline: str) -> dict:
    conn.request("POST", "/search", json.dumps({"query": query, "k": 10, "pipeline": pipeline, "explain": EXPLAIN}),
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
        body = search(conn, q, pipeline)
        degraded += bool(body.get("degraded"))
        TIMINGS.setdefault("sequential", []).append(stage_times(body))
    return time.perf_counter() - start, degraded


def stage_times(body: dict) -> dict[str, float]:
    """The response's per-stage milliseconds and its ``took_ms``."""
    return {**(body.get("timings_ms") or {}), "took": body["took_ms"]} if EXPLAIN else {}


def median_times(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    return {k: round(statistics.median(r.get(k, 0.0) for r in rows), 2) for k in keys}


def run_concurrent(port: int, queries: list[str], pipeline: str, threads: int) -> tuple[float, int]:
    work, lock, degraded = list(queries), threading.Lock(), [0]

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                if not work:
                    return
                q = work.pop()
            body = search(conn, q, pipeline)
            with lock:
                degraded[0] += bool(body.get("degraded"))
                TIMINGS.setdefault(f"concurrent {threads}", []).append(stage_times(body))

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
    parser.add_argument("--rounds", type=int, default=3, help="alternating sequential / concurrent rounds (median ratio)")
    parser.add_argument("--config", type=Path, default=None,
                        help="pipeline config for the service (default: configs/pipelines.yaml); on a slow shared CPU "
                             "pass one without time_budget_ms so that late reranks are not turned into fallbacks")
    parser.add_argument("--explain", action="store_true",
                        help="ask for per-stage timings and print their medians per mode (bigger responses)")
    args = parser.parse_args()
    global EXPLAIN
    EXPLAIN = args.explain

    collection = dataset_name(args.dataset)
    all_queries = load_queries(args.dataset)
    texts = [all_queries[q].text for q in load_qrels(args.dataset, "test")]
    warm_n = 2 * args.concurrency
    if len(texts) < args.requests + warm_n:
        raise SystemExit(f"need {args.requests + warm_n} test queries, have {len(texts)}")
    # both modes send the same queries (the result cache is off), after a warm-up in both modes on others:
    # the first concurrent batches meet new shapes (first-use kernel and allocator costs) that must not
    # count against either mode
    warm, queries = texts[:warm_n], texts[warm_n : warm_n + args.requests]
    port = free_port()
    env = {**os.environ, "SEARCH_COLLECTIONS": json.dumps([collection]), "SEARCH_PIPELINES": json.dumps([args.pipeline]),
           "SEARCH_INDEX_ROOT": str(default_index_root()), "SEARCH_CACHE_TTL_S": "0", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", **({"SEARCH_CONFIG": str(args.config.resolve())} if args.config else {})}
    server = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"], env=env)
    rounds = []
    try:
        wait_ready(port)
        run_concurrent(port, warm, args.pipeline, args.concurrency)  # loads, first forward passes
        run_sequential(port, warm[:4], args.pipeline)
        TIMINGS.clear()
        for _ in range(args.rounds):  # alternating, so that drift on a shared machine hits both modes
            rounds.append((run_sequential(port, queries, args.pipeline),
                           run_concurrent(port, queries, args.pipeline, args.concurrency)))
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"pipeline {args.pipeline} on {collection}: {args.requests} requests per mode and round, top-100 reranked each")
    print(f"{'round':<7}{'one at a time req/s':>21}{f'{args.concurrency} concurrent req/s':>22}{'ratio':>8}{'degraded':>10}")
    ratios, degraded = [], 0
    for i, ((t_seq, d_seq), (t_con, d_con)) in enumerate(rounds, 1):
        seq, con = args.requests / t_seq, args.requests / t_con
        ratios.append(con / seq)
        degraded += d_seq + d_con
        print(f"{i:<7}{seq:>21.2f}{con:>22.2f}{con / seq:>7.2f}x{d_seq + d_con:>10}")
    print(f"ratio concurrent/sequential, median of {len(ratios)} rounds: {statistics.median(ratios):.2f}x (target >= 1.5x)")
    for mode, rows in TIMINGS.items() if EXPLAIN else ():
        print(f"median ms per request, {mode}: {median_times(rows)}")
    if degraded:
        print("WARNING: some responses were degraded (reranker fell back): the ratio is not valid")


if __name__ == "__main__":
    main()
