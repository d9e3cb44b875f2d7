"""Stage types by name, and the context their builders get.

Each stage module calls :func:`register_stage` once at import (``pipeline/stages/__init__.py``
imports them all; :mod:`pipeline.registry` imports that package), so a builder is a function
that tools can see, never a ``"module:function"`` string. Builders get a :class:`BuildContext`
that shares heavy resources (searchers, models, document stores) between pipelines.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from pipeline.core.config import ServiceConfig, StageConfig, format_validation_error, parse_index
from pipeline.core.errors import ConfigError
from pipeline.core.stage import Stage


@dataclass(frozen=True)
class StageType:
    config: type[StageConfig]
    build: Callable[[Any, "BuildContext"], Stage]


_TYPES: dict[str, StageType] = {}


def register_stage(kind: str, config: type[StageConfig], build: Callable[[Any, "BuildContext"], Stage]) -> None:
    """Make ``type: kind`` in a config build a stage with ``build(config(**raw), ctx)``."""
    _TYPES[kind] = StageType(config, build)


def registered_stage_types() -> dict[str, StageType]:
    """Every registered type (all of them once :mod:`pipeline.registry` is imported)."""
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


def parse_stage(where: str, raw: dict[str, Any]) -> StageConfig:
    """The validated config of one stage entry; ``where`` prefixes error messages."""
    kind = raw.get("type")
    if kind not in _TYPES:
        raise ConfigError(f"{where}.type: unknown stage type {kind!r} (known: {', '.join(sorted(_TYPES))})")
    try:
        return _TYPES[kind].config(**raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from exc


def build_stage(raw: dict[str, Any], ctx: BuildContext, where: str = "stage") -> Stage:
    cfg = parse_stage(where, raw)
    stage = _TYPES[cfg.type].build(cfg, ctx)
    stage.name = cfg.name or stage.name
    stage.fail_open = cfg.fail_open
    return stage
