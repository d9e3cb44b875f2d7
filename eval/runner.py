"""Run a pipeline over every judged query of a split and score it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from eval.metrics import evaluate
from indexer.build import ensure_indexes
from pipeline.core.config import ServiceConfig
from pipeline.core.errors import UnknownPipelineError
from pipeline.core.types import Query, Results
from pipeline.registry import BuildContext, build_pipeline, required_indexes
from pipeline.storage.collection import dataset_name, load_qrels, load_queries

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    pipeline: str
    dataset: str
    split: str
    metrics: dict[str, float]
    results: Results
    seconds: float
    num_queries: int


def remove_self_hits(results: Results) -> Results:
    """BEIR convention: a query never retrieves the document that has its own id."""
    return {qid: [h for h in hits if h.doc_id != qid] for qid, hits in results.items()}


def judged_queries(dataset: Path, split: str, lang: str | None = None,
                   max_queries: int | None = None) -> tuple[list[Query], dict[str, dict[str, int]]]:
    """The judged queries of ``split`` and their qrels; ``max_queries``: the first N, in qrels file order
    (a fixed subset, the same for every pipeline: for slow pipelines on a CPU)."""
    qrels = load_qrels(dataset, split)
    if max_queries is not None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries}")
        qrels = dict(list(qrels.items())[:max_queries])
    queries = load_queries(dataset, lang=lang)
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise ValueError(f"{len(missing)} judged queries are not in queries.jsonl, e.g. {missing[:3]}")
    return [queries[q] for q in qrels], qrels


def check_pipelines(config: ServiceConfig, names: list[str]) -> None:
    """Refuse unknown pipeline names up front, with the closest configured name when there is one."""
    import difflib

    for name in names:
        if name not in config.pipelines:
            close = difflib.get_close_matches(name, list(config.pipelines), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownPipelineError(f"unknown pipeline {name!r}{hint} (configured: {', '.join(config.pipelines)})")


def run_eval(
    dataset: Path,
    split: str,
    pipeline: str,
    config: ServiceConfig,
    index_root: Path,
    models_dir: Path,
    batch_size: int = 64,
    collection: str | None = None,
    max_queries: int | None = None,
    measures: list | None = None,
) -> EvalResult:
    check_pipelines(config, [pipeline])
    queries, qrels = judged_queries(dataset, split, max_queries=max_queries)  # a wrong split fails before any loading
    collection = collection or dataset_name(dataset)
    ensure_indexes(dataset, collection, config, required_indexes(config, pipeline), index_root)
    ctx = BuildContext(index_root=index_root, collection=collection, config=config, models_dir=models_dir)
    pipe = build_pipeline(pipeline, ctx)
    start = time.perf_counter()
    results: Results = {}
    for i in range(0, len(queries), batch_size):
        results.update(pipe(queries[i : i + batch_size]))
        logger.info("%s: %d/%d queries", pipeline, min(i + batch_size, len(queries)), len(queries))
    seconds = time.perf_counter() - start
    results = remove_self_hits(results)
    run = {qid: {h.doc_id: h.score for h in hits} for qid, hits in results.items()}
    return EvalResult(pipeline, collection, split, evaluate(qrels, run, measures), results, seconds, len(queries))
