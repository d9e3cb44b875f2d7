"""The loaded state of the service: pipelines per collection and their document stores.

Built once by the app's lifespan. A pipeline that cannot be built (index not
published, model not trained) is recorded as off, with the reason, instead of
stopping the service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import ServiceConfig, load_config
from pipeline.docstore import FILENAME as DOCSTORE, DocStore
from pipeline.errors import PipelineError, UnknownCollectionError, UnknownPipelineError
from pipeline.index_store import check_name
from pipeline.registry import BuildContext, build_pipeline
from pipeline.stage import Pipeline, PipelineRun
from pipeline.types import Document, Query

logger = logging.getLogger(__name__)


@dataclass
class CollectionState:
    name: str
    context: BuildContext
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    off: dict[str, str] = field(default_factory=dict)
    docstore: DocStore | None = None


class Engine:
    """Holds every loaded pipeline; thread-safe for concurrent searches."""

    def __init__(self, config: ServiceConfig, index_root: Path, models_dir: Path, collections: list[str], pipelines: list[str] | None = None):
        self.config = config
        self.collections: dict[str, CollectionState] = {}
        names = pipelines or list(config.pipelines)
        for collection in collections:
            check_name(collection, "collection")
            ctx = BuildContext(index_root=Path(index_root), collection=collection, config=config, models_dir=Path(models_dir))
            state = CollectionState(collection, ctx)
            for name in names:
                try:
                    state.pipelines[name] = build_pipeline(name, ctx)
                    logger.info("pipeline %s/%s loaded", collection, name)
                except (PipelineError, ImportError, OSError) as exc:
                    state.off[name] = str(exc)
                    logger.warning("pipeline %s/%s is off: %s", collection, name, exc)
            state.docstore = _find_docstore(Path(index_root) / collection)
            self.collections[collection] = state

    @classmethod
    def from_settings(cls, settings) -> "Engine":
        return cls(load_config(settings.config), settings.index_root, settings.models_dir, settings.collections, settings.pipelines)

    @property
    def default_collection(self) -> str:
        return next(iter(self.collections))

    def ready(self) -> bool:
        return any(state.pipelines for state in self.collections.values())

    def collection(self, name: str | None) -> CollectionState:
        name = name or self.default_collection
        if name not in self.collections:
            raise UnknownCollectionError(f"unknown collection {name!r}; served: {sorted(self.collections)}")
        return self.collections[name]

    def pipeline(self, name: str, collection: str | None = None) -> Pipeline:
        state = self.collection(collection)
        if name in state.pipelines:
            return state.pipelines[name]
        if name in state.off:
            raise UnknownPipelineError(f"pipeline {name!r} is off for {state.name!r}: {state.off[name]}")
        raise UnknownPipelineError(f"unknown pipeline {name!r}; available: {sorted(state.pipelines)}")

    def search(self, queries: list[Query], pipeline: str, collection: str | None = None) -> PipelineRun:
        return self.pipeline(pipeline, collection).run(queries)

    def documents(self, doc_ids: list[str], collection: str | None = None) -> dict[str, Document]:
        store = self.collection(collection).docstore
        return store.get_many(doc_ids) if store else {}


def _find_docstore(folder: Path) -> DocStore | None:
    for current in sorted(folder.glob("*/current")):
        path = current.resolve() / DOCSTORE
        if path.is_file():
            return DocStore(path)
    return None
