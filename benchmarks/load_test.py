"""Bounded loopback load test of the real service: QPS, p50/p99, errors and server memory over time.

Starts ``python -m service`` (one uvicorn worker, API keys and a rate limit on, JSON logs at
WARNING, JVM heap ``$SEARCH_JVM_HEAP`` or 1g) on a free loopback port over the published indexes,
then per pipeline:

1. baseline: one client, sequential, ``--baseline-s`` seconds;
2. load: ``--warmup-s`` unmeasured, then ``--concurrency`` clients for ``--duration`` seconds with the
   cache off (every request runs the pipeline; one server), then the same on a second server with
   the result cache on (queries repeat, as real traffic does).

Queries are SciFact's test and train queries, cycled. Server RSS is sampled every second
(``/proc/<pid>/status``); "memory flat" means the least-squares slope over the load phase and
the last-minus-first difference are both small. Prints a table and ratios against the baseline.

    python -m benchmarks.load_test --dataset ../shared/data/scifact --pipelines bm25 'bm25>>ce' --duration 60 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np

from pipeline.core.settings_paths import REPO
from pipeline.storage.collection import dataset_name
from service.settings import hash_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the service is one process) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_query_texts(dataset: Path) -> list[str]:
    texts = []
    with open(dataset / "queries.jsonl") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
    return texts


@dataclass
class Service:
    url: str
    proc: subprocess.Popen
    key: str
    admin_key: str
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}


@contextlib.contextmanager
def running_service(env: dict[str, str], log: Path, ready_timeout_s: float = 300) -> Iterator[Service]:
    """``python -m service`` as a child process with fresh API/admin keys; stopped on exit."""
    key, admin = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    port = free_port()
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO),
        "SEARCH_API_KEY_HASHES": json.dumps([hash_key(key)]),
        "SEARCH_ADMIN_KEY_HASHES": json.dumps([hash_key(admin)]),
        "SEARCH_RATE_LIMIT_PER_MINUTE": "10000000", "SEARCH_RATE_LIMIT_BURST": "100000",
        "SEARCH_LOG_LEVEL": "WARNING",
        **env,
    }
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port)], env=full_env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited with {proc.returncode}; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service was not ready in {ready_timeout_s}s; see {log}")
            time.sleep(0.5)
        yield Service(url, proc, key, admin, log)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class LoadResult:
    label: str
    concurrency: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    degraded: int = 0
    cached: int = 0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    """``(seconds since start, outcome)``: ok, degraded, cached or error:<code> for every request."""

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + sum(self.errors.values())

    @property
    def qps(self) -> float:
        return len(self.latencies_ms) / self.duration_s

    def pct(self, p: float) -> float:
        return float(np.percentile(self.latencies_ms, p)) if self.latencies_ms else float("nan")

    def memory(self) -> tuple[float, float, float]:
        """(first MB, last MB, slope MB/min by least squares)."""
        if len(self.rss_mb) < 3:
            return float("nan"), float("nan"), float("nan")
        t, m = np.array(self.rss_mb).T
        slope = float(np.polyfit(t, m, 1)[0]) * 60
        return float(m[:3].mean()), float(m[-3:].mean()), slope


class MemorySampler:
    """Samples a pid's RSS every ``every_s`` seconds in a thread."""

    def __init__(self, pid: int, every_s: float = 1.0):
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic() - self._t0, rss_mb(self.pid)))
            self._stop.wait(self.every_s)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def load(service: Service, pipelines: list[str], queries: list[str], concurrency: int, duration_s: float,
               label: str, k: int = 10, offset: int = 0, uncached: frozenset[str] = frozenset()) -> LoadResult:
    """``concurrency`` clients POST /search back to back for ``duration_s``; pipelines alternate per request.

    Queries sent to a pipeline in ``uncached`` get a unique suffix, so that they always reach the pipeline.
    """
    result = LoadResult(label, concurrency, duration_s)
    counter = {"i": offset}
    t0 = time.monotonic()
    stop_at = t0 + duration_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=service.url, headers=service.headers, limits=limits, timeout=60) as client:
        async def worker() -> None:
            while time.monotonic() < stop_at:
                i = counter["i"]
                counter["i"] += 1
                pipeline = pipelines[i % len(pipelines)]
                text = queries[i % len(queries)] + (f" {i}" if pipeline in uncached else "")
                body = {"query": text, "k": k, "pipeline": pipeline}
                start = time.perf_counter()
                try:
                    r = await client.post("/search", json=body)
                except httpx.HTTPError as exc:  # counted by kind: ReadTimeout, ConnectError, RemoteProtocolError...
                    result.errors[type(exc).__name__] = result.errors.get(type(exc).__name__, 0) + 1
                    result.events.append((time.monotonic() - t0, f"error:{type(exc).__name__}"))
                    continue
                if r.status_code != 200:
                    result.errors[str(r.status_code)] = result.errors.get(str(r.status_code), 0) + 1
                    result.events.append((time.monotonic() - t0, f"error:{r.status_code}"))
                    continue
                result.latencies_ms.append((time.perf_counter() - start) * 1000)
                payload = r.json()
                result.degraded += bool(payload.get("degraded"))
                result.cached += bool(payload.get("cached"))
                outcome = "degraded" if payload.get("degraded") else "cached" if payload.get("cached") else "ok"
                result.events.append((time.monotonic() - t0, outcome))

        with MemorySampler(service.proc.pid) as sampler:
            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            result.duration_s = time.monotonic() - started
        result.rss_mb = sampler.samples
    return result


def row(r: LoadResult) -> str:
    first, last, slope = r.memory()
    errors = sum(r.errors.values())
    return (f"| {r.label} | {r.concurrency} | {r.duration_s:.0f} | {r.requests} | {errors} | {r.qps:.1f} | {r.pct(50):.1f} | "
            f"{r.pct(99):.1f} | {r.cached} | {r.degraded} | {first:.0f} -> {last:.0f} ({slope:+.1f}/min) |")


HEADER = ("| run | clients | s | requests | errors | QPS | p50 ms | p99 ms | cached | degraded | server RSS MB (slope) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def pipeline_status(service: Service) -> dict[str, str]:
    out = {}
    for p in httpx.get(f"{service.url}/pipelines", headers=service.headers, timeout=10).json():  # needs a key
        out[p["name"]] = "loaded" if p["loaded"] else f"off: {p['reason'][:120]}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--pipelines", nargs="+", default=["bm25"])
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--baseline-s", type=float, default=10)
    parser.add_argument("--warmup-s", type=float, default=10, help="unmeasured load before each measured run (JIT, heap, cache)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--redis-url", default=None, help="result cache in Redis (default: in-process LRU)")
    parser.add_argument("--skip-cached", action="store_true", help="only the cache-off runs")
    parser.add_argument("--only-cached", action="store_true", help="only the cache-on runs")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "load_test_service.log")
    args = parser.parse_args()

    collection = dataset_name(args.dataset)
    queries = load_query_texts(args.dataset)
    env = {"SEARCH_COLLECTIONS": json.dumps([collection]), "SEARCH_PIPELINES": json.dumps(args.pipelines),
           "SEARCH_JVM_HEAP": os.environ.get("SEARCH_JVM_HEAP", "1g")}
    if args.redis_url:
        env["SEARCH_REDIS_URL"] = args.redis_url
        env["SEARCH_CACHE_NAMESPACE"] = f"load-{secrets.token_hex(4)}"
    results: list[LoadResult] = []
    for cached in [m for m in (False, True) if not (args.skip_cached and m) and not (args.only_cached and not m)]:
        mode_env = {**env, "SEARCH_CACHE_TTL_S": "300" if cached else "0"}
        with running_service(mode_env, args.log) as service:
            status = pipeline_status(service)
            print(f"service {service.url} pid {service.proc.pid} (cache {'on' if cached else 'off'}); pipelines: {status}")
            for p in args.pipelines:
                if status.get(p) != "loaded":
                    print(f"SKIPPED {p}: {status.get(p, 'not configured')}")
                    continue
                if not cached:
                    results.append(asyncio.run(load(service, [p], queries, 1, args.baseline_s, f"{p} baseline-1-client", args.k)))
                    print(row(results[-1]), flush=True)
                label = f"{p} {'cache-on' if cached else 'no-cache'}"
                if args.warmup_s:
                    asyncio.run(load(service, [p], queries, args.concurrency, args.warmup_s, "warm-up", args.k))
                results.append(asyncio.run(load(service, [p], queries, args.concurrency, args.duration, label, args.k,
                                                offset=len(queries) // 2)))
                print(row(results[-1]), flush=True)
    print()
    print(HEADER)
    for r in results:
        print(row(r))
    print()
    base = {r.label.split(" ")[0]: r for r in results if "baseline" in r.label}
    for r in results:
        b = base.get(r.label.split(" ")[0])
        if b is not None and r is not b and b.qps:
            print(f"{r.label}: QPS {r.qps / b.qps:.2f}x the 1-client baseline, p50 {r.pct(50) / b.pct(50):.2f}x")
    failed = sum(sum(r.errors.values()) for r in results)
    print(f"total errors: {failed}", {r.label: r.errors for r in results if r.errors} or "")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
