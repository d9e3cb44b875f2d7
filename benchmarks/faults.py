"""Faults under load, against the real service: every request must still succeed.

While ``--concurrency`` clients search ``bm25`` and ``bm25>>flaky`` (alternating) for ``--duration``
seconds, a script of faults runs against the live service:

* its own Redis (a private ``redis-server`` on a free port, the result cache) is stopped, then restarted;
* the reranker raises (a flag file makes the ``fault_reranker`` stage below fail; the pipeline
  fails open to the BM25 order and marks the response ``degraded``);
* a new good index version is published and ``POST /admin/reload`` swaps it in;
* a corrupt version (a truncated file) and an incomplete one (no manifest) are published and
  offered for reload: both must be refused while the old version keeps serving;
* a last good version is published and swapped in.

The service runs on a private copy of the published Lucene index (the shared ``indexes/`` is
never touched). Prints per-phase request counts and errors, cache and reload metrics, memory.
The ``fault_reranker`` stage is loaded into the service through ``SEARCH_STAGE_PLUGINS``.

    python -m benchmarks.faults --dataset ../shared/data/scifact --duration 60 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import httpx

from pipeline.core.config import StageConfig
from pipeline.core.stage import Stage
from pipeline.core.types import Query, Results, sort_hits
from pipeline.registry import BuildContext, register_stage


class FaultRerankerConfig(StageConfig):
    type: str = "fault_reranker"
    index: str = "lucene"
    flag_file: str
    """While this file exists the stage raises (the fault)."""


class FaultReranker(Stage):
    """Reranks by query-term overlap with the stored text; raises while ``flag_file`` exists."""

    name = "flaky"
    needs_candidates = True

    def __init__(self, docs, flag_file: str):
        self.docs, self.flag_file = docs, flag_file

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        if os.path.exists(self.flag_file):
            raise RuntimeError("injected reranker fault")
        out = {}
        for q in queries:
            hits = (candidates or {}).get(q.query_id, [])
            texts = self.docs.get_many([h.doc_id for h in hits])
            terms = set(re.findall(r"\w+", q.text.lower()))
            out[q.query_id] = sort_hits([
                h.rescored(self.name, h.score + len(terms & set(re.findall(r"\w+", texts[h.doc_id].text.lower()))))
                for h in hits if h.doc_id in texts
            ])
        return out


def _build(cfg: FaultRerankerConfig, ctx: BuildContext) -> FaultReranker:
    from pipeline.storage.docstore import FILENAME, DocStore
    from pipeline.storage.index_store import resolve

    folder, _ = resolve(ctx.index_root, ctx.collection, cfg.index)
    return FaultReranker(DocStore(folder / FILENAME), cfg.flag_file)


register_stage("fault_reranker", FaultRerankerConfig, _build)


# ----------------------------------------------------------------------------- the harness
def publish_copy(root: Path, collection: str, source: Path, corrupt: bool = False) -> str:
    """Publish a copy of ``source`` as a new version (atomic, with a fresh manifest); optionally truncate a file after."""
    from pipeline.storage.index_store import publishing

    base = root / collection / "lucene"
    with publishing(root, collection, "lucene") as tmp:
        for item in source.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
    new = (base / "current").resolve()
    if corrupt:
        victim = max((p for p in (new / "lucene").iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
        with open(victim, "r+b") as f:
            f.truncate(victim.stat().st_size // 2)
    return new.name


def publish_incomplete(root: Path, collection: str, source: Path) -> str:
    """A version without a manifest (a build that never finished), made ``current`` by hand."""
    base = root / collection / "lucene"
    version = time.strftime("%Y%m%dT%H%M%S") + "-incomplete"
    shutil.copytree(source, base / "versions" / version)
    (base / "versions" / version / "manifest.json").unlink()
    os.symlink(Path("versions") / version, base / ".current-incomplete")
    os.replace(base / ".current-incomplete", base / "current")
    return version


class OwnRedis:
    """A private redis-server (no persistence) that the script may stop and start."""

    def __init__(self, port: int, workdir: Path):
        self.port, self.workdir, self.proc = port, workdir, None

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                                      "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> None:
    from benchmarks.load_test import HEADER, free_port, load, load_query_texts, row, running_service
    from pipeline.core.settings_paths import default_index_root
    from pipeline.storage.collection import dataset_name
    from pipeline.storage.index_store import resolve

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--query-pool", type=int, default=200, help="distinct queries (repeats exercise the cache)")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "faults_service.log")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is needed (apt-get install -y redis-server)")

    collection = dataset_name(args.dataset)
    queries = load_query_texts(args.dataset)[: args.query_pool]
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    root = work / "indexes"
    source, manifest = resolve(default_index_root(), collection, "lucene")  # fails clearly if not built
    good_source = work / "good-version"
    shutil.copytree(source, good_source)
    publish_copy(root, collection, good_source)
    flag = work / "reranker-fails"
    config = {
        "indexes": {"lucene": {"type": "lucene", "language": manifest.params.get("language", "en")}},
        "pipelines": {
            "bm25": {"stages": [{"type": "bm25", "index": "lucene", "k1": 0.9, "b": 0.4, "cutoff": 1000}]},
            "bm25>>flaky": {"stages": [{"type": "bm25", "index": "lucene", "k1": 0.9, "b": 0.4, "cutoff": 20},
                                       {"type": "fault_reranker", "flag_file": str(flag), "fail_open": True}]},
        },
    }
    (work / "config.json").write_text(json.dumps(config))  # JSON is YAML
    redis = OwnRedis(free_port(), work)
    redis.start()
    env = {
        "SEARCH_CONFIG": str(work / "config.json"), "SEARCH_INDEX_ROOT": str(root),
        "SEARCH_COLLECTIONS": json.dumps([collection]), "SEARCH_STAGE_PLUGINS": json.dumps(["benchmarks.faults"]),
        "SEARCH_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0", "SEARCH_REDIS_RETRY_S": "1",
        "SEARCH_CACHE_TTL_S": "300", "SEARCH_JVM_HEAP": os.environ.get("SEARCH_JVM_HEAP", "1g"),
    }
    timeline: list[tuple[float, str]] = []
    reloads: list[dict] = []
    try:
        with running_service(env, args.log) as service:
            admin = {"x-admin-key": service.admin_key}

            def reload(what: str) -> None:
                r = httpx.post(f"{service.url}/admin/reload", headers=admin, timeout=120)
                body = r.json()
                reloads.append({"what": what, "status": r.status_code, "swapped": body.get("swapped"),
                                "refused": {k: v[:100] for k, v in (body.get("refused") or {}).items()},
                                "serving": body.get("versions", {}).get(collection, {}).get("lucene")})

            d = args.duration
            script: list[tuple[float, str, Callable[[], object]]] = [
                (0.08 * d, "redis stopped", redis.stop),
                (0.25 * d, "redis restarted", redis.start),
                (0.35 * d, "reranker raising", flag.touch),
                (0.50 * d, "reranker fixed", lambda: flag.unlink()),
                (0.55 * d, "new version + reload", lambda: (publish_copy(root, collection, good_source), reload("good"))),
                (0.68 * d, "corrupt version + reload", lambda: (publish_copy(root, collection, good_source, corrupt=True), reload("corrupt"))),
                (0.78 * d, "incomplete version + reload", lambda: (publish_incomplete(root, collection, good_source), reload("incomplete"))),
                (0.88 * d, "good version + reload", lambda: (publish_copy(root, collection, good_source), reload("good again"))),
            ]
            started = threading.Event()

            def run_script() -> None:
                started.wait()
                t0 = time.monotonic()
                for at, label, action in script:
                    time.sleep(max(0.0, at - (time.monotonic() - t0)))
                    timeline.append((time.monotonic() - t0, label))
                    action()
                    timeline.append((time.monotonic() - t0, label + " (done)"))

            faults = threading.Thread(target=run_script)
            faults.start()
            started.set()
            # bm25 repeats a small pool (the Redis cache is in play); bm25>>flaky queries are unique (the reranker always runs)
            result = asyncio.run(load(service, ["bm25", "bm25>>flaky"], queries, args.concurrency, d,
                                      "faults (bm25 + bm25>>flaky)", uncached=frozenset({"bm25>>flaky"})))
            faults.join()
            metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(HEADER)
    print(row(result))
    print("\nphase | from s | requests | errors | degraded | cached")
    marks = [(0.0, "start")] + [(t, label) for t, label in timeline if not label.endswith("(done)")] + [(result.duration_s + 1, "end")]
    for (t_from, label), (t_to, _) in zip(marks[:-1], marks[1:], strict=True):
        events = [o for t, o in result.events if t_from <= t < t_to]
        print(f"{label} | {t_from:.1f} | {len(events)} | {sum(o.startswith('error') for o in events)} | "
              f"{events.count('degraded')} | {events.count('cached')}")
    print("\nreloads:")
    for r in reloads:
        print(json.dumps(r))
    print("\nmetrics: cache bypass {:.0f}, redis errors {:.0f}, cache hits {:.0f}, degraded {:.0f}, reloads swapped {:.0f} refused {:.0f}".format(
        metric(metrics, "search_cache_requests_total", outcome="bypass"), metric(metrics, "search_cache_errors_total"),
        metric(metrics, "search_cache_requests_total", outcome="hit"), metric(metrics, "search_degraded_total"),
        metric(metrics, "search_index_reloads_total", outcome="swapped"), metric(metrics, "search_index_reloads_total", outcome="refused")))
    hits_after_restart = [o for t, o in result.events if t > next(t for t, lbl in timeline if lbl == "redis restarted (done)") + 2 and o == "cached"]
    print(f"cached responses after Redis came back: {len(hits_after_restart)}")
    errors = sum(result.errors.values())
    refused_ok = [r["what"] for r in reloads if r["what"] in ("corrupt", "incomplete") and r["refused"] and not r["swapped"]]
    swapped_ok = [r["what"] for r in reloads if r["what"] in ("good", "good again") and r["swapped"]]
    print(f"failed requests: {errors} {result.errors or ''}; refused as expected: {refused_ok}; swapped as expected: {swapped_ok}")
    raising = [o for t, o in result.events if _between(timeline, t, "reranker raising (done)", "reranker fixed")]
    print(f"degraded while the reranker raised: {raising.count('degraded')} of {len(raising)} responses")
    ok = errors == 0 and len(refused_ok) == 2 and len(swapped_ok) == 2 and raising.count("degraded") > 0
    raise SystemExit(0 if ok else 1)


def _between(timeline: list[tuple[float, str]], t: float, start: str, end: str) -> bool:
    marks = dict((label, at) for at, label in timeline)
    return marks.get(start, float("inf")) <= t < marks.get(end, float("-inf"))


if __name__ == "__main__":
    main()
