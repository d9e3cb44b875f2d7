"""Many pipelines over one dataset in one run, sharing the results of identical stage prefixes.

Pipelines that start with the same stages (same validated stage configs and cutoffs,
e.g. ``bm25`` and ``bm25>>ce``) compute that prefix once; each pipeline still reports
the latency of every stage it consists of. Per-query metrics are kept for the
statistics, and rerank-depth sweeps give the effectiveness/latency trade-off::

    exp = Experiment(Path("../shared/data/scifact"), "test", config, index_root, models_dir)
    outcome = exp.run_all(["bm25", "bm25>>ce"])
    outcome.systems["bm25>>ce"].metrics["nDCG@10"], outcome.curves["bm25>>ce"]
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from eval.metrics import evaluate, per_query
from eval.runner import judged_queries, remove_self_hits
from indexer.build import ensure_indexes
from pipeline.core.config import ServiceConfig
from pipeline.core.errors import PipelineError
from pipeline.core.stage import Pipeline, Stage
from pipeline.core.types import Results
from pipeline.registry import BuildContext, build_stage, parse_stage, stage_indexes
from pipeline.storage.collection import corpus_path, dataset_name, file_checksum

logger = logging.getLogger(__name__)

DEFAULT_DEPTHS = (10, 20, 50, 100)
CURVE_MEASURE = "nDCG@10"


@dataclass
class SystemResult:
    """One evaluated system: aggregate and per-query metrics, and its latency."""

    name: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    ms_per_query: float | None = None
    stage_ms_per_query: dict[str, float] = field(default_factory=dict)
    reused_stages: int = 0
    """How many leading stages came from another pipeline's identical prefix."""
    degraded: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DepthPoint:
    """Effectiveness and latency when the reranker sees ``depth`` candidates (0: no reranking)."""

    depth: int
    metrics: dict[str, float]
    ms_per_query: float


@dataclass
class DatasetOutcome:
    dataset: str
    split: str
    num_queries: int
    systems: dict[str, SystemResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    curves: dict[str, list[DepthPoint]] = field(default_factory=dict)
    results: dict[str, Results] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    """Where the judgements came from (checksums) and each pipeline's stage configs."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "num_queries": self.num_queries,
            "provenance": self.provenance,
            "systems": {k: asdict(v) for k, v in self.systems.items()},
            "skipped": self.skipped,
            "curves": {k: [asdict(p) for p in v] for k, v in self.curves.items()},
        }


@dataclass
class _Prefix:
    results: Results
    stage_ms: dict[str, float]
    degraded: list[str]


def stage_key(raws: Iterable[dict[str, Any]], where: str = "stage") -> str:
    """A canonical key for a stage sequence: validated configs (defaults filled), sorted keys."""
    return json.dumps([parse_stage(where, raw).model_dump() for raw in raws], sort_keys=True, default=str)


class Experiment:
    """Runs pipelines over every judged query of one dataset split, caching shared prefixes."""

    def __init__(
        self,
        dataset: Path,
        split: str,
        config: ServiceConfig,
        index_root: Path,
        models_dir: Path,
        collection: str | None = None,
        batch_size: int = 64,
        warmup: int = 8,
        max_queries: int | None = None,
        stage_cache: Path | None = None,
    ):
        self.dataset, self.split, self.config = Path(dataset), split, config
        self.index_root = Path(index_root)
        self.collection = collection or dataset_name(self.dataset)
        self.batch_size, self.warmup = batch_size, warmup
        self.queries, self.qrels = judged_queries(self.dataset, split, max_queries=max_queries)
        self.ctx = BuildContext(index_root=self.index_root, collection=self.collection, config=config, models_dir=Path(models_dir))
        self._outputs: dict[str, _Prefix] = {}
        self._stages: dict[str, Stage] = {}
        self._warm: set[int] = set()
        self.stage_cache = None
        if stage_cache is not None:
            from eval.stage_cache import StageCache

            self.stage_cache = StageCache(stage_cache, self.collection, split, [q.query_id for q in self.queries],
                                          file_checksum(corpus_path(self.dataset)))

    def provenance(self, names: Iterable[str]) -> dict[str, Any]:
        """sha256 of the corpus and the qrels file, and the stage configs of the named pipelines."""
        return {
            "path": str(self.dataset),
            "corpus_sha256": file_checksum(corpus_path(self.dataset)),
            "qrels_sha256": file_checksum(self.dataset / "qrels" / f"{self.split}.tsv"),
            "pipelines": {n: self.config.pipelines[n].model_dump() for n in names if n in self.config.pipelines},
        }

    def stage_from_cache(self) -> dict[str, str]:
        """First stages read from the stage cache in this run: stage name -> machine that measured it."""
        return dict(self.stage_cache.loaded) if self.stage_cache else {}

    # -- building -----------------------------------------------------------------------------
    def _raws(self, name: str) -> list[dict[str, Any]]:
        if name not in self.config.pipelines:
            raise PipelineError(f"unknown pipeline {name!r} (configured: {sorted(self.config.pipelines)})")
        return self.config.pipelines[name].stages

    def _stage(self, name: str, i: int) -> Stage:
        """Stage ``i`` of a pipeline, built on first use (with the indexes it reads): a first stage
        served from the stage cache is never built, so it needs neither Java nor its index."""
        raw = self._raws(name)[i]
        where = f"pipelines.{name}.stages[{i}]"
        key = stage_key([raw], where)
        if key not in self._stages:
            ensure_indexes(self.dataset, self.collection, self.config, stage_indexes(raw), self.index_root)
            self._stages[key] = build_stage(raw, self.ctx, where)
        return self._stages[key]

    # -- running ------------------------------------------------------------------------------
    def _run_stage(self, stage: Stage, cutoff: int | None, candidates: Results | None) -> tuple[Results, float, list[str]]:
        """Run one stage over all queries in batches; returns results, total ms and degraded names."""
        single = Pipeline([stage], [cutoff], name=stage.name)
        if self.warmup and id(stage) not in self._warm:  # one untimed batch first: JIT, caches, lazy loads
            warm = self.queries[: self.warmup]
            single.run(warm, None if candidates is None else {q.query_id: candidates.get(q.query_id, []) for q in warm})
            self._warm.add(id(stage))
        out: Results = {}
        degraded: list[str] = []
        total = 0.0
        for i in range(0, len(self.queries), self.batch_size):
            batch = self.queries[i : i + self.batch_size]
            cand = None if candidates is None else {q.query_id: candidates.get(q.query_id, []) for q in batch}
            start = time.perf_counter()
            run = single.run(batch, cand)
            total += (time.perf_counter() - start) * 1000
            out.update(run.results)
            degraded.extend(d for d in run.degraded if d not in degraded)
        return out, total, degraded

    def _prefix(self, name: str, upto: int) -> tuple[_Prefix, int]:
        """Results after ``stages[:upto]`` (cutoffs applied); returns it and how many leading
        stages came from the cache.

        A stage's output is cached before its cutoff, keyed by everything before it (cutoffs
        included) and its own config without the cutoff: ``hybrid`` (fusion, cutoff 1000) and
        ``hybrid>>ce`` (the same fusion, cutoff 100) run the fusion once.
        """
        raws = self._raws(name)
        reused = 0
        current = _Prefix({}, {}, [])
        for i in range(upto):
            own = {k: v for k, v in raws[i].items() if k != "cutoff"}
            key = stage_key(raws[:i], f"pipelines.{name}") + stage_key([own], f"pipelines.{name}.stages[{i}]")
            cached = self.stage_cache.get(key) if key not in self._outputs and self.stage_cache and i == 0 else None
            if key in self._outputs:
                out = self._outputs[key]
                reused += reused == i
            elif cached is not None:
                out = _Prefix(cached.results, {cached.name: cached.ms}, list(cached.degraded))
                self._outputs[key] = out
                logger.info("%s: stage %s read from the stage cache (measured on %s)", name, cached.name, cached.machine)
            else:
                stage = self._stage(name, i)
                results, ms, degraded = self._run_stage(stage, None, current.results if i else None)
                out = _Prefix(results, {**current.stage_ms, stage.name: ms}, current.degraded + degraded)
                self._outputs[key] = out
                if self.stage_cache is not None and i == 0:
                    self.stage_cache.put(key, stage.name, results, ms, degraded)
                logger.info("%s: stage %s done (%.1f ms/query)", name, stage.name, ms / max(1, len(self.queries)))
            cutoff = raws[i].get("cutoff")
            results = out.results if cutoff is None else {q: hits[:cutoff] for q, hits in out.results.items()}
            current = _Prefix(results, out.stage_ms, out.degraded)
        return current, reused

    def _score(self, results: Results) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        run = {qid: {h.doc_id: h.score for h in hits} for qid, hits in remove_self_hits(results).items()}
        return evaluate(self.qrels, run), per_query(self.qrels, run)

    def run_pipeline(self, name: str) -> tuple[SystemResult, Results]:
        raws = self._raws(name)
        for i in range(1, len(raws)):  # rerankers: built (and validated) up front; the first stage only if it runs
            self._stage(name, i)
        prefix, reused = self._prefix(name, len(raws))
        metrics, pq = self._score(prefix.results)
        n = max(1, len(self.queries))
        stage_ms = {k: v / n for k, v in prefix.stage_ms.items()}
        system = SystemResult(name, metrics, pq, sum(stage_ms.values()), stage_ms, reused, prefix.degraded)
        return system, remove_self_hits(prefix.results)

    def rerank_candidates(self, name: str) -> tuple[Results, dict[str, Any]]:
        """What the first reranker of pipeline ``name`` receives (the stages before it, cutoffs applied),
        and that reranker's stage config; for studies that rescore the same candidates many ways."""
        raws = self._raws(name)
        first = next((i for i in range(1, len(raws)) if self._stage(name, i).needs_candidates), None)
        if first is None:
            raise PipelineError(f"pipeline {name!r} has no reranking stage")
        prefix, _ = self._prefix(name, first)
        return prefix.results, dict(raws[first])

    def depth_curve(self, name: str, depths: Iterable[int] = DEFAULT_DEPTHS) -> list[DepthPoint]:
        """nDCG@10 and ms/query when the first reranker sees the top ``depth`` candidates.

        Depth 0 is the first stage(s) alone. Depths beyond the configured candidate cutoff
        are left out; the candidates are computed once and truncated per depth.
        """
        raws = self._raws(name)
        first = next((i for i in range(1, len(raws)) if self._stage(name, i).needs_candidates), None)
        if not first:
            return []
        stages = [self._stage(name, i) for i in range(len(raws))[first:]]
        prefix, _ = self._prefix(name, first)
        n = max(1, len(self.queries))
        base_ms = sum(prefix.stage_ms.values()) / n
        available = max((len(h) for h in prefix.results.values()), default=0)
        points = [DepthPoint(0, self._score(prefix.results)[0], base_ms)]
        for depth in sorted({d for d in depths if 0 < d <= available}):
            if depth == available:  # no truncation: this is the configured pipeline, already run
                full, _ = self._prefix(name, len(raws))
                points.append(DepthPoint(depth, self._score(full.results)[0], sum(full.stage_ms.values()) / n))
                continue
            current: Results = {q: hits[:depth] for q, hits in prefix.results.items()}
            ms = 0.0
            for stage, raw in zip(stages, raws[first:], strict=True):
                current, stage_ms, _ = self._run_stage(stage, raw.get("cutoff"), current)
                ms += stage_ms
            points.append(DepthPoint(depth, self._score(current)[0], base_ms + ms / n))
            logger.info("%s depth %d: %s=%.4f", name, depth, CURVE_MEASURE, points[-1].metrics[CURVE_MEASURE])
        return points

    def fill_stage_cache(self, names: Iterable[str]) -> dict[str, str]:
        """Run (or find) the first stage of every named pipeline and store it in the stage cache;
        returns pipeline -> 'cached' or why it could not run. Nothing is reranked."""
        if self.stage_cache is None:
            raise ValueError("fill_stage_cache needs an Experiment with stage_cache set")
        status = {}
        for name in names:
            try:
                self._prefix(name, 1)
                status[name] = "cached"
            except (PipelineError, ImportError, OSError) as exc:
                status[name] = f"{type(exc).__name__}: {exc}"
        return status

    def run_all(
        self, names: Iterable[str], depths: Iterable[int] | None = DEFAULT_DEPTHS, exclude: Iterable[str] = ()
    ) -> DatasetOutcome:
        """Evaluate every named pipeline; one that cannot be built is recorded as skipped with the reason."""
        names = list(names)
        outcome = DatasetOutcome(self.collection, self.split, len(self.queries), provenance=self.provenance(names))
        excluded = set(exclude)
        for name in names:
            if name in excluded:
                outcome.skipped[name] = "excluded on the command line (--skip)"
                continue
            try:
                system, results = self.run_pipeline(name)
                outcome.systems[name], outcome.results[name] = system, results
                if depths:
                    curve = self.depth_curve(name, depths)
                    if curve:
                        outcome.curves[name] = curve
            except (PipelineError, ImportError, OSError) as exc:
                outcome.skipped[name] = f"{type(exc).__name__}: {exc}"
                logger.warning("%s/%s skipped: %s", self.collection, name, exc)
        outcome.provenance["from_stage_cache"] = self.stage_from_cache()
        return outcome


MISSING_POLICIES = ("error", "covered", "zero")


class RunCoverageError(ValueError):
    """A run file does not cover every judged query (``python -m eval score --missing`` says what to do)."""


def outcome_from_runs(
    dataset: str, split: str, qrels: dict[str, dict[str, int]], runs: dict[str, Results], missing: str = "error",
    measures: list | None = None,
) -> DatasetOutcome:
    """Score existing runs (e.g. read from TREC files): no pipeline runs, so no latency.

    A judged query absent from a run is handled by ``missing``:

    * ``error`` (default): raise :class:`RunCoverageError` naming the run and the count;
    * ``covered``: score every run on the judged queries that *all* runs cover (one set, so the
      significance tests stay paired); ``provenance["coverage"]`` records what was left out;
    * ``zero``: the TREC convention (``trec_eval -c``): a missing query scores 0.
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    absent = {name: sorted(q for q in qrels if q not in results) for name, results in runs.items()}
    absent = {name: qids for name, qids in absent.items() if qids}
    if absent and missing == "error":
        name, qids = next(iter(absent.items()))
        raise RunCoverageError(
            f"run {name!r} has no results for {len(qids)} of {len(qrels)} judged queries (e.g. {', '.join(qids[:3])}); "
            "scoring them as 0 would understate it. Use --missing covered to score only the judged queries every run "
            "covers, or --missing zero for the trec_eval -c convention")
    judged = qrels
    if absent and missing == "covered":
        dropped = set().union(*absent.values())
        judged = {q: rel for q, rel in qrels.items() if q not in dropped}
        if not judged:
            raise RunCoverageError("the runs have no judged query in common: nothing to score")
    outcome = DatasetOutcome(dataset, split, len(judged))
    outcome.provenance["coverage"] = {"policy": missing, "judged": len(qrels), "scored": len(judged),
                                      "missing": {name: len(qids) for name, qids in absent.items()}}
    for name, results in runs.items():
        run = {qid: {h.doc_id: h.score for h in hits} for qid, hits in results.items() if qid in judged}
        outcome.systems[name] = SystemResult(name, evaluate(judged, run, measures), per_query(judged, run, measures))
        outcome.results[name] = results
    return outcome
