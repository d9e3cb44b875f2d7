"""Stage types by name, and building pipelines from a validated config.

Each stage module registers itself with :func:`register_stage`; the builder is
called with the stage's validated config and a :class:`BuildContext` that
shares heavy resources (searchers, models) between pipelines.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.config import ServiceConfig, StageConfig, parse_index, parse_stage
from pipeline.errors import ConfigError, UnknownPipelineError
from pipeline.stage import Pipeline, Stage

# Stage modules imported lazily so that the core needs none of their dependencies.
_STAGE_MODULES = (
    "pipeline.stages.bm25",
    "pipeline.stages.dense",
    "pipeline.stages.fusion",
    "pipeline.stages.cross_encoder",
    "pipeline.stages.listwise",
    "pipeline.stages.modular_reranker",
    "pipeline.stages.sharded",
)


@dataclass(frozen=True)
class StageType:
    config: type[StageConfig]
    build: Callable[[Any, "BuildContext"], Stage]


_TYPES: dict[str, StageType] = {}


def register_stage(kind: str, config: type[StageConfig], build: Callable[[Any, "BuildContext"], Stage]) -> None:
    _TYPES[kind] = StageType(config, build)


def stage_types() -> dict[str, StageType]:
    for module in _STAGE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but a dependency is missing
                raise
    return _TYPES


@dataclass
class BuildContext:
    """What builders need: where indexes are, which collection, shared resources."""

    index_root: Path
    collection: str
    config: ServiceConfig
    models_dir: Path = Path("models")
    device: str | None = None
    _shared: dict[Any, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def shared(self, key: Any, factory: Callable[[], Any]) -> Any:
        """One instance per key across all pipelines (e.g. one searcher per index)."""
        with self._lock:
            if key not in self._shared:
                self._shared[key] = factory()
            return self._shared[key]

    def index_config(self, name: str):
        if name not in self.config.indexes:
            raise ConfigError(f"index {name!r} is not declared in the config")
        return parse_index(name, self.config.indexes[name])


def build_stage(raw: dict[str, Any], ctx: BuildContext, where: str = "stage") -> Stage:
    cfg = parse_stage(where, raw)
    stage = stage_types()[cfg.type].build(cfg, ctx)
    stage.name = cfg.name or stage.name
    stage.fail_open = cfg.fail_open
    return stage


def build_pipeline(name: str, ctx: BuildContext) -> Pipeline:
    """Build the named pipeline; raises ConfigError / IndexNotFoundError with a clear message."""
    if name not in ctx.config.pipelines:
        raise ConfigError(f"unknown pipeline {name!r} (configured: {sorted(ctx.config.pipelines)})")
    stages, cutoffs = [], []
    for i, raw in enumerate(ctx.config.pipelines[name].stages):
        where = f"pipelines.{name}.stages[{i}]"
        stages.append(build_stage(raw, ctx, where))
        cutoffs.append(raw.get("cutoff"))
    return Pipeline(stages, cutoffs, name=name)


def stage_indexes(raw: dict[str, Any], out: list[str] | None = None) -> list[str]:
    """Index names one stage config reads (a fusion stage's retrievers included), appended to ``out``."""
    out = [] if out is None else out
    if "index" in raw and raw["index"] not in out:
        out.append(raw["index"])
    for child in raw.get("retrievers", []) or []:
        stage_indexes(child, out)
    return out


def required_indexes(config: ServiceConfig, pipeline: str) -> list[str]:
    """Index names a pipeline reads (nested retrievers of a fusion stage included)."""
    if pipeline not in config.pipelines:
        raise UnknownPipelineError(f"unknown pipeline {pipeline!r} (configured: {sorted(config.pipelines)})")
    out: list[str] = []
    for raw in config.pipelines[pipeline].stages:
        stage_indexes(raw, out)
    return out
