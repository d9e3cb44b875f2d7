"""Declarative pipeline configuration (YAML), validated at start-up.

A config file names the indexes a collection needs and the pipelines built on
them. Each stage entry has a ``type`` that selects its schema from the stage
registry (:mod:`pipeline.registry`, which also loads configs); unknown types and wrong fields fail with a
:class:`~pipeline.core.errors.ConfigError` that names the field, e.g.
``pipelines.bm25.stages[0].k1: Input should be a valid number``.

Example::

    indexes:
      lucene: {type: lucene, language: en}
    pipelines:
      bm25:
        stages:
          - {type: bm25, index: lucene, k1: 0.9, b: 0.4, cutoff: 1000}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.core.errors import ConfigError
from pipeline.storage.index_store import check_name


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageConfig(StrictModel):
    """Fields every stage accepts; each stage type extends this."""

    type: str
    name: str | None = None
    cutoff: int | None = Field(default=None, ge=1, le=10_000)
    fail_open: bool = False


class LuceneIndexConfig(StrictModel):
    type: Literal["lucene"] = "lucene"
    language: str = "en"
    """Analyzer language (Anserini codes: en, de, es, ar, zh, ru, ...; 'sw' style codes fall back to whitespace)."""
    fields: Literal["title+text", "text"] = "title+text"


class FaissIndexConfig(StrictModel):
    """A dense index: ``model`` (see ``pipeline.encoders.bi_encoders.load_encoder``) encodes the corpus into a
    FAISS index made by ``factory`` (``Flat`` exact inner product, ``HNSW32``, ``IVF1024,PQ32x8``...)."""

    type: Literal["faiss"] = "faiss"
    model: str = "minilm"
    factory: str = "Flat"
    normalize: bool = True
    max_length: int = Field(default=512, ge=8, le=8192)
    """Upper bound on tokens per document (the model's own limit applies when lower)."""
    batch_size: int = Field(default=64, ge=1, le=4096)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Encoder precision; auto = float16 on GPU, float32 on CPU."""
    train_size: int = Field(default=100_000, ge=1000, le=10_000_000)
    """Vectors sampled to train IVF/PQ factories (ignored by Flat and HNSW)."""


IndexConfig = LuceneIndexConfig | FaissIndexConfig


class PipelineConfig(StrictModel):
    description: str = ""
    stages: list[dict[str, Any]] = Field(min_length=1)
    serve_by_default: bool = True
    """False: the service loads it only when ``SEARCH_PIPELINES`` names it (e.g. slow, unproven rerankers)."""


class ServiceConfig(StrictModel):
    indexes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    pipelines: dict[str, PipelineConfig]

    @field_validator("indexes", "pipelines")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key or len(key) > 100 or "/" in key.replace(">>", "") or ".." in key:
                raise ValueError(f"invalid name {key!r}")
        return value


def parse_index(name: str, raw: dict[str, Any]) -> IndexConfig:
    check_name(name)
    kind = raw.get("type", "lucene")
    model = {"lucene": LuceneIndexConfig, "faiss": FaissIndexConfig}.get(kind)
    if model is None:
        raise ConfigError(f"indexes.{name}.type: unknown index type {kind!r} (known: lucene, faiss)")
    try:
        return model(**raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"indexes.{name}")) from exc


def format_validation_error(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        parts.append(f"{prefix}{loc}: {err['msg']}")
    return "; ".join(parts)
