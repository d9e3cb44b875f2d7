"""First-stage results on disk, so rerankers can be evaluated where the first stage cannot run.

An experiment's first stages (BM25 over Lucene, FAISS search, their fusion) need Java, the
indexes and a CPU; its rerankers want a GPU. With ``python -m eval report --stage-cache DIR``
every first-stage output is written to ``DIR`` (and read from it when present), so a report
can be split over two machines and still be one report::

    # CPU machine, with Java and the indexes: fill the cache (every pipeline's first stage, no reranking)
    python -m eval report --datasets ../shared/data/scifact --stage-cache .cache/stages --first-stages-only --out reports/first-stages
    # GPU machine, same datasets and config: every pipeline; first stages come from the cache
    python -m eval report --datasets ../shared/data/scifact --stage-cache .cache/stages --out reports/full

An entry is keyed by the collection, the split, the judged query ids, the corpus checksum and
the stage's validated config (defaults filled in). It keeps the results (every hit with its
stage scores), the stage's measured milliseconds and the machine that measured them; the
report lists which stages came from the cache. Entries are written atomically. Rebuilding an
index with new settings changes its config key, but a rebuild with the same settings is not
detected: delete the folder after re-indexing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from eval.machine import machine
from pipeline.core.types import Hit, Results

logger = logging.getLogger(__name__)
FORMAT = 1


@dataclass(frozen=True)
class CachedStage:
    name: str
    results: Results
    ms: float
    """Total milliseconds the stage took over all queries, where it was measured."""
    degraded: list[str]
    machine: str


class StageCache:
    """One folder of cached stage outputs for one collection, split and query set."""

    def __init__(self, root: Path, collection: str, split: str, query_ids: Sequence[str], corpus_sha256: str):
        self.folder = Path(root) / collection
        scope = json.dumps({"split": split, "queries": sorted(query_ids), "corpus": corpus_sha256}, sort_keys=True)
        self.scope = hashlib.sha256(scope.encode()).hexdigest()
        self.loaded: dict[str, str] = {}
        """stage name -> machine it was measured on, for every entry read in this run."""

    def _path(self, key: str) -> Path:
        return self.folder / (hashlib.sha256((self.scope + key).encode()).hexdigest()[:24] + ".json.gz")

    def get(self, key: str) -> CachedStage | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                raw = json.load(f)
            if raw.get("format") != FORMAT or raw.get("key") != key:
                return None
            results = {qid: [Hit(qid, d, s, dict(ss)) for d, s, ss in hits] for qid, hits in raw["results"].items()}
            entry = CachedStage(str(raw["name"]), results, float(raw["ms"]), list(raw["degraded"]), str(raw["machine"]))
        except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
            logger.warning("stage cache entry %s is unreadable (%s): recomputing", path, exc)
            return None
        self.loaded[entry.name] = entry.machine
        return entry

    def put(self, key: str, name: str, results: Results, ms: float, degraded: list[str]) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "format": FORMAT, "key": key, "name": name, "ms": ms, "degraded": degraded, "machine": machine_label(),
            "results": {qid: [[h.doc_id, h.score, dict(h.stage_scores)] for h in hits] for qid, hits in results.items()},
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            json.dump(payload, f)
        tmp.replace(path)
        return path


def machine_label() -> str:
    """``"<cpu model>, <n> cores"``: where a cached stage was measured."""

    info = machine()
    return f"{info['cpu']}, {info['cores']} cores"
