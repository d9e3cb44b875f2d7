"""The loaded state of the service: pipelines per collection, their index versions and document stores.

Built once by the app's lifespan. A pipeline that cannot be built (index not published,
model not trained) is recorded as off, with the reason, instead of stopping the service.

:meth:`Engine.reload` rebuilds the pipelines whose indexes have a new published version
into a new :class:`CollectionState` and swaps the reference in one assignment; requests
take a state once and use it to the end, so a swap never mixes versions within a request.
A corrupt or incomplete new version is refused and the old pipelines keep serving; which
version may be served (``current``, else the newest one that verifies) is decided by
:class:`~service.index_guard.IndexGuard`, which also notices a served version damaged in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pipeline.core.config import ServiceConfig
from pipeline.core.errors import PipelineError, UnknownCollectionError, UnknownPipelineError
from pipeline.core.stage import Pipeline, PipelineRun, Stage
from pipeline.core.types import Document, Query, Results
from pipeline.registry import BuildContext, build_pipeline, load_config, required_indexes, routed_pipelines
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import DocStore
from pipeline.storage.index_store import check_name, index_dir, pinned
from service.index_guard import IndexGuard

logger = logging.getLogger(__name__)

BatchObserver = Callable[[str, str, int], None]
"""``(pipeline, stage, n_candidates)`` called before every reranking stage runs."""

BUILD_ERRORS = (PipelineError, ImportError, OSError, RuntimeError, ValueError)


class ObservedStage(Stage):
    """Wraps a reranking stage to report how many candidates each call gets."""

    def __init__(self, inner: Stage, pipeline: str, engine: "Engine"):
        self.inner, self.pipeline, self._engine = inner, pipeline, engine
        self.name, self.fail_open = inner.name, inner.fail_open

    @property
    def needs_candidates(self) -> bool:  # type: ignore[override]
        return self.inner.needs_candidates

    def notes(self) -> list[str]:
        return self.inner.notes()

    def fast_path(self) -> dict | None:
        return self.inner.fast_path()

    def language_choice(self, query: Query) -> dict | None:
        return self.inner.language_choice(query)

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        observer = self._engine.on_rerank_batch
        if observer is not None and candidates is not None:
            observer(self.pipeline, self.name, sum(len(candidates.get(q.query_id, ())) for q in queries))
        return self.inner(queries, candidates)


@dataclass
class CollectionState:
    name: str
    context: BuildContext
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    off: dict[str, str] = field(default_factory=dict)
    docstore: DocStore | None = None
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    """``pipeline -> {index: version}`` of the versions each loaded pipeline reads."""
    config_hashes: dict[str, str] = field(default_factory=dict)
    docstore_index: str | None = None

    def pipeline(self, name: str) -> Pipeline:
        if name in self.pipelines:
            return self.pipelines[name]
        if name in self.off:
            raise UnknownPipelineError(f"pipeline {name!r} is off for {self.name!r}: {self.off[name]}")
        raise UnknownPipelineError(f"unknown pipeline {name!r}; available: {sorted(self.pipelines)}")

    def served_versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for versions in self.versions.values():
            out.update(versions)
        return out


@dataclass
class ReloadReport:
    swapped: list[str] = field(default_factory=list)
    """``collection/pipeline`` entries now serving a new version."""
    unchanged: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    """``collection/pipeline`` -> why the new version was refused (the old one keeps serving)."""
    fallback: list[str] = field(default_factory=list)
    """``collection/pipeline`` entries now serving an older good version because ``current`` failed its checks."""


class Engine:
    """Holds every loaded pipeline; thread-safe for concurrent searches and reloads."""

    def __init__(
        self,
        config: ServiceConfig,
        index_root: Path,
        models_dir: Path,
        collections: list[str],
        pipelines: list[str] | None = None,
        shared: dict[str, Any] | None = None,
        warmup_query: str | None = "test",
    ):
        self.config = config
        self.index_root, self.models_dir = Path(index_root), Path(models_dir)
        self.pipeline_names = pipelines or [n for n, p in config.pipelines.items() if p.serve_by_default]
        self.shared = dict(shared or {})
        """Resources put into every build context (e.g. the query-embedding cache)."""
        self.warmup_query = warmup_query
        self.on_rerank_batch: BatchObserver | None = None
        self._reload_lock = threading.Lock()
        self.guard = IndexGuard(self.index_root)
        states = {}
        for collection in collections:
            check_name(collection, "collection")
            states[collection] = self._load(collection, None, ReloadReport())
        self._collections: dict[str, CollectionState] = states

    @classmethod
    def from_settings(cls, settings, shared: dict[str, Any] | None = None) -> "Engine":
        return cls(load_config(settings.config), settings.index_root, settings.models_dir, settings.collections,
                   settings.pipelines, shared=shared)

    # ------------------------------------------------------------------ loading
    def _context(self, collection: str, old: BuildContext | None = None) -> BuildContext:
        """A fresh build context; on reload it keeps the old one's models (not its index-derived resources)."""
        ctx = BuildContext(index_root=self.index_root, collection=collection, config=self.config, models_dir=self.models_dir)
        for key, value in self.shared.items():
            ctx.shared(key, lambda value=value: value)
        if old is not None:
            words = {collection, "docstore", *self.config.indexes}
            for key, value in list(old._shared.items()):
                if not _mentions(key, words, str(self.index_root.resolve())):
                    ctx.shared(key, lambda value=value: value)
        return ctx

    def _load(self, collection: str, old: CollectionState | None, report: ReloadReport) -> CollectionState:
        """A new state: pipelines whose index versions are unchanged are reused from ``old``."""
        ctx = self._context(collection, old.context if old is not None else None)
        state = CollectionState(collection, ctx)
        for name, spec in self.config.pipelines.items():
            if name not in self.pipeline_names and not spec.serve_by_default:
                state.off[name] = ("not served by default (serve_by_default: false in the config); "
                                   "name it in SEARCH_PIPELINES to load it")
        for name in self.pipeline_names:
            where = f"{collection}/{name}"
            refused: list[str] = []
            try:
                versions = self._versions(collection, name, refused)
            except BUILD_ERRORS as exc:
                self._keep_or_off(state, old, name, exc, report, where)
                continue
            if refused and (old is None or old.off.get(name) != refused[0]):
                report.refused[where] = refused[0]
            if old is not None and name in old.pipelines and old.versions.get(name) == versions:
                state.pipelines[name], state.versions[name] = old.pipelines[name], versions
                state.config_hashes[name] = old.config_hashes[name]
                report.unchanged.append(where)
                continue
            try:
                with pinned(self.index_root, collection, versions):  # stages open exactly the verified versions
                    pipe = self._observed(build_pipeline(name, ctx))
                if self._versions(collection, name) != versions:
                    raise PipelineError("a new version was published while loading; try again")
                if old is not None and self.warmup_query:
                    pipe.run([Query("warmup", self.warmup_query)])
            except BUILD_ERRORS as exc:
                self._keep_or_off(state, old, name, exc, report, where)
                continue
            state.pipelines[name], state.versions[name] = pipe, versions
            state.config_hashes[name] = self._config_hash(name)
            if old is not None:
                (report.fallback if refused else report.swapped).append(where)
            logger.info("pipeline %s loaded (indexes %s)", where, versions)
        state.docstore, state.docstore_index = self._docstore(collection, state, old)
        return state

    def _keep_or_off(self, state: CollectionState, old: CollectionState | None, name: str, exc: Exception,
                     report: ReloadReport, where: str) -> None:
        if old is not None and name in old.pipelines:
            state.pipelines[name], state.versions[name] = old.pipelines[name], old.versions[name]
            state.config_hashes[name] = old.config_hashes[name]
            report.refused[where] = str(exc)
            logger.error("refused the new index version for %s, the old one keeps serving: %s", where, exc)
        else:
            state.off[name] = str(exc)
            if old is not None and old.off.get(name) != str(exc):  # still off for the same reason: not news
                report.refused[where] = str(exc)
            logger.warning("pipeline %s is off: %s", where, exc)

    def _versions(self, collection: str, pipeline: str, refused: list[str] | None = None) -> dict[str, str]:
        """Verified versions of every index the pipeline reads (``current``, else the newest good one).

        Why ``current`` was passed over goes into ``refused``; raises when no version verifies.
        """
        if pipeline not in self.config.pipelines:
            raise UnknownPipelineError(f"unknown pipeline {pipeline!r} (configured: {sorted(self.config.pipelines)})")
        out = {}
        for index in required_indexes(self.config, pipeline):
            choice = self.guard.choose(collection, index)
            if refused is not None:
                refused.extend(choice.refused)
            out[index] = choice.folder.name
        return out

    def _config_hash(self, pipeline: str) -> str:
        spec = {
            "pipeline": self.config.pipelines[pipeline].model_dump(),
            "indexes": {i: self.config.indexes.get(i) for i in required_indexes(self.config, pipeline)},
        }
        if routes := routed_pipelines(self.config, pipeline):  # a routing pipeline: its routes' stages too
            spec["routes"] = {r: self.config.pipelines[r].model_dump() for r in routes}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _observed(self, pipe: Pipeline) -> Pipeline:
        stages = [ObservedStage(s, pipe.name, self) if s.needs_candidates else s for s in pipe.stages]
        return Pipeline(stages, pipe.cutoffs, name=pipe.name)

    def _docstore(self, collection: str, state: CollectionState, old: CollectionState | None) -> tuple[DocStore | None, str | None]:
        """The document store of a served index version (sorted by index name, the served ones first)."""
        served = state.served_versions()
        for index in sorted(served):
            if old is not None and old.docstore_index == index and old.served_versions().get(index) == served[index]:
                return old.docstore, index
            path = index_dir(self.index_root, collection, index) / "versions" / served[index] / DOCSTORE
            if path.is_file():
                try:
                    return DocStore(path), index
                except PipelineError as exc:
                    logger.error("document store %s is unreadable: %s", path, exc)
        if old is not None and old.docstore is not None:
            return old.docstore, old.docstore_index
        return _find_docstore(self.index_root / collection), None

    def reload(self) -> ReloadReport:
        """Load new published versions and swap them in atomically; one reload at a time."""
        report = ReloadReport()
        with self._reload_lock:
            new = dict(self._collections)
            for collection, old in self._collections.items():
                new[collection] = self._load(collection, old, report)
            self._collections = new  # one reference assignment: atomic for readers
        logger.info("reload: swapped %s, refused %s", report.swapped, sorted(report.refused))
        return report

    def published_targets(self) -> dict[str, str]:
        """``collection/index -> current symlink target`` of every index the served pipelines read (cheap)."""
        out = {}
        indexes = sorted({i for p in self.pipeline_names if p in self.config.pipelines for i in required_indexes(self.config, p)})
        for collection in self._collections:
            for index in indexes:
                link = index_dir(self.index_root, collection, index) / "current"
                try:
                    out[f"{collection}/{index}"] = str(link.readlink())
                except OSError:
                    out[f"{collection}/{index}"] = ""
        return out

    # ------------------------------------------------------------------ serving
    @property
    def collections(self) -> dict[str, CollectionState]:
        return self._collections

    @property
    def default_collection(self) -> str:
        return next(iter(self._collections))

    def ready(self) -> bool:
        return any(state.pipelines for state in self._collections.values())

    def damaged(self) -> dict[str, str]:
        """``collection/index -> reason`` for served versions changed on disk that no longer verify (cheap when intact)."""
        return self.guard.damaged(self.served_versions())

    def refresh_leases(self) -> None:
        """Tell the indexer's retention which versions this process serves (see :mod:`pipeline.storage.index_retention`)."""
        self.guard.refresh_leases(self.served_versions())

    def collection(self, name: str | None) -> CollectionState:
        collections = self._collections
        name = next(iter(collections)) if name is None else name
        if name not in collections:
            raise UnknownCollectionError(f"unknown collection {name!r}; served: {sorted(collections)}")
        return collections[name]

    def pipeline(self, name: str, collection: str | None = None) -> Pipeline:
        return self.collection(collection).pipeline(name)

    def search(self, queries: list[Query], pipeline: str, collection: str | None = None) -> PipelineRun:
        return self.pipeline(pipeline, collection).run(queries)

    def documents(self, doc_ids: list[str], collection: str | None = None) -> dict[str, Document]:
        store = self.collection(collection).docstore
        return store.get_many(doc_ids) if store else {}

    def served_versions(self) -> dict[str, dict[str, str]]:
        return {name: state.served_versions() for name, state in self._collections.items()}

    def rerankers(self, collection: str | None = None) -> tuple[dict[str, Stage], dict[str, str]]:
        """``(pipeline -> its last stage)`` for loaded pipelines ending in a reranker, and the off ones with reasons."""
        state = self.collection(collection)
        loaded = {}
        for name, pipe in state.pipelines.items():
            last = pipe.stages[-1]
            if last.needs_candidates and len(pipe.stages) > 1:
                loaded[name] = last.inner if isinstance(last, ObservedStage) else last
        off = {name: reason for name, reason in state.off.items() if _ends_in_reranker(self.config, name)}
        return loaded, off


def _mentions(key: Any, words: set[str], index_root: str) -> bool:
    """True if a shared-resource key names an index, the collection, a document store or a path under the index root.

    Such resources derive from index files and are rebuilt on reload; others (models,
    tokenizers, language detectors) are reused. Keys of index-derived resources must
    therefore name their index, version or folder.
    """
    parts = key if isinstance(key, (tuple, list)) else (key,)
    return any(str(part) in words or index_root in str(part) for part in parts)


def _ends_in_reranker(config: ServiceConfig, pipeline: str) -> bool:
    """A pipeline of several stages ends in a stage that reranks its input."""
    return len(config.pipelines[pipeline].stages) > 1


def _find_docstore(folder: Path) -> DocStore | None:
    for current in sorted(folder.glob("*/current")):
        path = current.resolve() / DOCSTORE
        if path.is_file():
            return DocStore(path)
    return None
