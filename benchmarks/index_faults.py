"""Combined fault benchmark of issue 21: index integrity, retention and isolation under load.

``--concurrency`` clients search ``bm25`` and ``bm25>>flaky`` (a cheap reranker from
``benchmarks.faults``) on a real service in its production profile (keys, admin key, rate limit,
its own Redis, the watcher on) for ``--duration`` seconds while a script of faults runs:

1. Redis stopped, then restarted;
2. same-size corruption offered: a new version whose ``.tim``/``.doc`` files are overwritten in the middle;
3. manifest type errors: a new version whose manifest has a number for ``version``, a list for ``files``;
4. retention after two bad publishes: two more corrupt versions (the served one must stay on disk, and a
   replica started now must choose it);
5. a good version published and reloaded;
6. a costly ``/rerank`` flood (``--flood-clients`` clients sending 1,000-document requests);
7. the served version damaged in place (``/readyz`` must turn 503 and the service fall back by itself);
8. a last good version published and reloaded.

Every search answer is compared with the answer of the intact index (taken before the faults): a
different answer counts as "answered from a corrupt index". Builds its own BM25 index of the dataset
(Cranfield by default) under a temporary ``SEARCH_INDEX_ROOT``; nothing shared is touched.

    python -m benchmarks.index_faults --dataset ../shared/data/cranfield --duration 200 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from benchmarks.faults import OwnRedis, metric, publish_copy
from benchmarks.load_test import free_port, load_query_texts, running_service


def damage_same_size(folder: Path) -> list[str]:
    """Overwrite up to 64 KiB in the middle of the ``.tim`` and ``.doc`` files (sizes unchanged)."""
    hit = []
    for f in sorted((folder / "lucene").iterdir()):
        if f.suffix in (".tim", ".doc"):
            size = f.stat().st_size
            n = min(64 * 1024, max(1, size // 3))
            with open(f, "r+b") as fh:
                fh.seek((size - n) // 2)
                chunk = fh.read(n)
                fh.seek((size - n) // 2)
                fh.write(bytes(b ^ 0x5A for b in chunk))
            hit.append(f.name)
    return hit


def break_manifest(folder: Path) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    data["version"], data["files"] = 5, sorted(data["files"])
    (folder / "manifest.json").write_text(json.dumps(data))


class Probe(threading.Thread):
    """Polls ``/readyz`` and ``/indexes`` every 0.1 s: (t, readyz status, served version)."""

    def __init__(self, url: str, headers: dict, collection: str, t0: float):
        super().__init__(daemon=True)
        self.url, self.headers, self.collection, self.t0 = url, headers, collection, t0
        self.samples: list[tuple[float, int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as c:
            while not self.stop.is_set():
                try:
                    ready = c.get(f"{self.url}/readyz").status_code
                    served = c.get(f"{self.url}/indexes", headers=self.headers).json()[self.collection]["lucene"]
                except (httpx.HTTPError, KeyError, ValueError):
                    ready, served = -1, ""
                self.samples.append((time.monotonic() - self.t0, ready, served))
                time.sleep(0.1)


async def search_load(url, headers, queries, expected, concurrency, stop_at, t0, events):
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        counter = {"i": 0}

        async def worker():
            while time.monotonic() < stop_at:
                i = counter["i"] = counter["i"] + 1
                pipeline = ("bm25", "bm25>>flaky")[i % 2]
                text = queries[i % len(queries)]
                try:
                    r = await client.post("/search", json={"query": text, "pipeline": pipeline, "k": 10})
                except httpx.HTTPError as exc:
                    events.append((time.monotonic() - t0, f"error:{type(exc).__name__}"))
                    continue
                if r.status_code != 200:
                    events.append((time.monotonic() - t0, f"http:{r.status_code}"))
                    continue
                ids = [h["doc_id"] for h in r.json()["hits"]]
                events.append((time.monotonic() - t0, "ok" if ids == expected[(pipeline, text)] else "wrong"))

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def rerank_flood(url, headers, docs, clients, until, outcomes):
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        async def worker():
            while time.monotonic() < until:
                try:
                    r = await client.post("/rerank", json={"query": "flow over a flat plate", "documents": docs,
                                                           "model": "bm25>>flaky"})
                    outcomes[str(r.status_code)] += 1
                    if r.status_code in (429, 503):
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(clients)))


def main() -> None:
    from indexer.build import ensure_indexes
    from pipeline.registry import parse_config
    from pipeline.storage.collection import dataset_name, iter_corpus
    from service.index_guard import IndexGuard

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/cranfield"))
    parser.add_argument("--duration", type=float, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--flood-clients", type=int, default=6)
    parser.add_argument("--query-pool", type=int, default=150)
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "index_faults_service.log")
    args = parser.parse_args()

    collection, d = dataset_name(args.dataset), args.duration
    queries = load_query_texts(args.dataset)[: args.query_pool]
    work = Path(tempfile.mkdtemp(prefix="index-faults-"))
    root = work / "indexes"
    config = {"indexes": {"lucene": {"type": "lucene", "language": "en"}},
              "pipelines": {"bm25": {"stages": [{"type": "bm25", "index": "lucene", "k1": 0.9, "b": 0.4, "cutoff": 100}]},
                            "bm25>>flaky": {"stages": [{"type": "bm25", "index": "lucene", "k1": 0.9, "b": 0.4, "cutoff": 20},
                                                       {"type": "fault_reranker", "flag_file": str(work / "never"),
                                                        "fail_open": True}]}}}
    ensure_indexes(args.dataset, collection, parse_config(config), ["lucene"], root)
    good = work / "good-source"
    shutil.copytree((root / collection / "lucene" / "current").resolve(), good)
    (work / "config.json").write_text(json.dumps(config))
    flood_docs = [d.text[:800].ljust(800, ".") for d in list(iter_corpus(args.dataset))[:1000]]
    redis = OwnRedis(free_port(), work)
    redis.start()
    env = {"SEARCH_ENV": "production", "SEARCH_CORS_ORIGINS": '["https://app.example"]',
           "SEARCH_RATE_LIMIT_PER_MINUTE": "60000", "SEARCH_RATE_LIMIT_BURST": "10000",
           "SEARCH_CONFIG": str(work / "config.json"), "SEARCH_INDEX_ROOT": str(root),
           "SEARCH_COLLECTIONS": json.dumps([collection]), "SEARCH_STAGE_PLUGINS": json.dumps(["benchmarks.faults"]),
           "SEARCH_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0", "SEARCH_REDIS_RETRY_S": "1",
           "SEARCH_CACHE_TTL_S": "2", "SEARCH_RELOAD_POLL_S": "1", "SEARCH_JVM_HEAP": "1g",
           "SEARCH_INDEX_KEEP_VERSIONS": "2"}
    base = root / collection / "lucene"
    timeline: list[tuple[float, str]] = []
    notes: dict[str, object] = {}
    events: list[tuple[float, str]] = []
    flood: Counter = Counter()
    try:
        with running_service(env, args.log) as service:
            admin = {"x-admin-key": service.admin_key}
            expected = {}
            with httpx.Client(base_url=service.url, headers=service.headers, timeout=60) as c:
                for text in queries:
                    for pipeline in ("bm25", "bm25>>flaky"):
                        r = c.post("/search", json={"query": text, "pipeline": pipeline, "k": 10})
                        expected[(pipeline, text)] = [h["doc_id"] for h in r.json()["hits"]]
                served0 = c.get("/indexes").json()[collection]["lucene"]

            def reload(what: str) -> None:
                r = httpx.post(f"{service.url}/admin/reload", headers=admin, timeout=120)
                notes[f"reload {what}"] = {"status": r.status_code, "swapped": r.json().get("swapped"),
                                           "fallback": r.json().get("fallback"),
                                           "refused": sorted((r.json().get("refused") or {}).keys()),
                                           "serving": (r.json().get("versions") or {}).get(collection, {}).get("lucene")}

            def publish_damaged() -> str:
                v = publish_copy(root, collection, good)
                damage_same_size(base / "versions" / v)
                return v

            def offer_bad_manifest() -> None:
                break_manifest(base / "versions" / publish_copy(root, collection, good))
                reload("manifest types")

            def two_bad_publishes() -> None:
                served = httpx.get(f"{service.url}/indexes", headers=service.headers).json()[collection]["lucene"]
                publish_damaged(), publish_damaged()
                choice = IndexGuard(root).choose(collection, "lucene")  # what a replica started now would serve
                notes["retention"] = {"served": served, "still on disk": (base / "versions" / served).is_dir(),
                                      "replica would serve": choice.folder.name,
                                      "versions on disk": len(list((base / "versions").iterdir()))}

            def damage_served() -> None:
                served = httpx.get(f"{service.url}/indexes", headers=service.headers).json()[collection]["lucene"]
                notes["damaged in place"] = {"version": served, "files": damage_same_size(base / "versions" / served)}

            def start_flood() -> None:
                threading.Thread(target=lambda: asyncio.run(rerank_flood(service.url, service.headers, flood_docs,
                                 args.flood_clients, time.monotonic() + 0.15 * d, flood)), daemon=True).start()

            script = [(0.05, "redis stopped", redis.stop), (0.15, "redis restarted", redis.start),
                      (0.20, "same-size corruption offered", lambda: (publish_damaged(), reload("same-size corrupt"))),
                      (0.27, "manifest type errors offered", offer_bad_manifest),
                      (0.34, "two bad publishes (retention)", two_bad_publishes),
                      (0.42, "good version + reload", lambda: (publish_copy(root, collection, good), reload("good"))),
                      (0.48, "rerank flood", start_flood),
                      (0.70, "served version damaged in place", damage_served),
                      (0.85, "good version + reload", lambda: (publish_copy(root, collection, good), reload("good again")))]
            t0 = time.monotonic()
            probe = Probe(service.url, service.headers, collection, t0)
            probe.start()

            def run_script() -> None:
                for at, label, action in script:
                    time.sleep(max(0.0, at * d - (time.monotonic() - t0)))
                    timeline.append((time.monotonic() - t0, label))
                    action()

            faults = threading.Thread(target=run_script)
            faults.start()
            asyncio.run(search_load(service.url, service.headers, queries, expected, args.concurrency, t0 + d, t0, events))
            faults.join()
            probe.stop.set()
            probe.join()
            metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(timeline, events, probe.samples, notes, flood, metrics, served0, args)


def report(timeline, events, samples, notes, flood, metrics, served0, args) -> None:
    marks = dict((label, t) for t, label in timeline)
    damage_at, next_good = marks["served version damaged in place"], marks["good version + reload"]
    damaged_version = notes["damaged in place"]["version"]
    first_503 = next((t for t, s, _ in samples if t >= damage_at and s == 503), None)
    recovered = next((t for t, s, v in samples if first_503 and t > first_503 and s == 200 and v and v != damaged_version), None)
    window_end = recovered if recovered is not None else next_good
    inside = [o for t, o in events if damage_at <= t <= window_end + 1]
    outside = [o for t, o in events if not damage_at <= t <= window_end + 1]
    count = Counter(o for _, o in events)
    five_xx_outside = sum(o.startswith("http:5") or o.startswith("error:") for o in outside)
    print(f"## index faults: {args.concurrency} clients, {args.duration:.0f} s, dataset {args.dataset.name}\n")
    print(f"searches: {len(events)} ({len(events) / args.duration:.0f}/s); outcomes {dict(count)}")
    print(f"answered from a corrupt index (a wrong answer) outside the in-place damage window: {outside.count('wrong')}")
    print(f"5xx or transport errors on well-formed searches outside that window: {five_xx_outside}")
    print(f"inside the window ({damage_at:.1f} s to {window_end:.1f} s): {dict(Counter(inside))}")
    print(f"/readyz 503 {first_503 - damage_at:.2f} s after the damage" if first_503 else "/readyz never turned 503")
    if recovered:
        served_after = next(v for t, s, v in samples if t >= recovered)
        print(f"recovered by itself {recovered - damage_at:.2f} s after the damage, serving {served_after}")
    print(f"/readyz samples 503 during the run: {sum(s == 503 for _, s, _ in samples)} of {len(samples)}")
    print(f"rerank flood outcomes: {dict(flood)}")
    print("reloads: " + ", ".join(f"{o}={metric(metrics, 'search_index_reloads_total', outcome=o):.0f}"
                                  for o in ("swapped", "refused", "fallback", "unchanged", "error")))
    print(f"cache bypassed while Redis was down: {metric(metrics, 'search_cache_requests_total', outcome='bypass'):.0f}")
    print(f"first served version {served0}")
    print("\ntimeline: " + "; ".join(f"{t:.1f}s {label}" for t, label in timeline))
    for key, value in notes.items():
        print(f"{key}: {json.dumps(value)}")
    ok = outside.count("wrong") == 0 and five_xx_outside == 0 and first_503 is not None and first_503 - damage_at <= 5 \
        and recovered is not None and notes["retention"]["still on disk"]
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
