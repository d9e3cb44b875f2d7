"""Loading configs and building pipelines from them, with every stage type registered.

Importing this module imports :mod:`pipeline.stages` (each stage module registers its type
with :func:`~pipeline.core.build_context.register_stage`), so configs are validated against
every known type. Stage modules import :mod:`pipeline.core.build_context`, never this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

import pipeline.stages  # noqa: F401 - registers every stage type
from pipeline.core.build_context import (
    BuildContext,
    StageType,
    build_stage,
    parse_stage,
    register_stage,
    registered_stage_types,
)
from pipeline.core.config import ServiceConfig, format_validation_error, parse_index
from pipeline.core.errors import ConfigError, UnknownPipelineError
from pipeline.core.stage import Pipeline

__all__ = ["BuildContext", "StageType", "build_pipeline", "build_stage", "load_config", "parse_config",
           "parse_stage", "register_stage", "required_indexes", "routed_pipelines", "stage_indexes", "stage_types"]


def stage_types() -> dict[str, StageType]:
    return registered_stage_types()


def load_config(path: Path | str) -> ServiceConfig:
    """Read and fully validate a YAML config (stages and indexes included)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(raw, source=str(path))


def parse_config(raw: Any, source: str = "config") -> ServiceConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'pipelines' (and 'indexes')")
    try:
        config = ServiceConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc
    for name, spec in config.indexes.items():
        parse_index(name, spec)
    for name, pipe in config.pipelines.items():
        for i, stage in enumerate(pipe.stages):
            parsed = parse_stage(f"pipelines.{name}.stages[{i}]", stage)
            index = getattr(parsed, "index", None)
            if index is not None and index not in config.indexes:
                raise ConfigError(
                    f"pipelines.{name}.stages[{i}].index: {index!r} is not declared under 'indexes' "
                    f"(declared: {sorted(config.indexes)})"
                )
            for target in getattr(parsed, "pipeline_refs", lambda: [])():  # a routing stage (by_language)
                if target not in config.pipelines:
                    raise ConfigError(f"pipelines.{name}.stages[{i}]: route {target!r} is not a configured pipeline "
                                      f"(configured: {sorted(config.pipelines)})")
                if any(s.get("type") == stage.get("type") for s in config.pipelines[target].stages):
                    raise ConfigError(f"pipelines.{name}.stages[{i}]: route {target!r} routes again")
    return config


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
        for target, first_only in _routes(raw):  # a by_language stage reads its routes' indexes
            for routed in config.pipelines[target].stages[: 1 if first_only else None]:
                stage_indexes(routed, out)
    return out


def routed_pipelines(config: ServiceConfig, pipeline: str) -> list[str]:
    """Names of the pipelines a pipeline's routing stages (by_language) run; [] for a plain pipeline."""
    return list(dict.fromkeys(t for raw in config.pipelines[pipeline].stages for t, _ in _routes(raw)))


def _routes(raw: dict[str, Any]) -> list[tuple[str, bool]]:
    """``(pipeline, first stage only)`` for each pipeline a routing stage runs; [] for any other stage."""
    parsed = parse_stage("stage", raw)
    refs = getattr(parsed, "pipeline_refs", None)
    return [(t, bool(getattr(parsed, "first_stage_only", False))) for t in refs()] if refs else []


def standalone_stage(raw: dict[str, Any], index_root: Path, collection: str,
                     indexes: dict[str, dict[str, Any]] | None = None, models_dir: Path = Path("models")):
    """One stage built from its config outside any pipeline (e.g. BM25 for a training job's candidates).

    Example::

        bm25 = standalone_stage({"type": "bm25", "index": "lucene", "k": 100}, root, "scifact",
                                {"lucene": {"type": "lucene", "language": "en"}})
    """
    config = ServiceConfig(indexes=indexes or {}, pipelines={})
    return build_stage(raw, BuildContext(Path(index_root), collection, config, models_dir=Path(models_dir)))
