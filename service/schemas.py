"""Request and response models of the HTTP API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

MAX_QUERY_CHARS = 2048
"""Documented query length limit (characters); the service enforces ``Settings.max_query_chars``."""


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(description="Query text; not empty, at most 2048 characters.")
    k: StrictInt = Field(default=10, ge=1, le=1000, description="Number of hits to return (1..1000).")
    pipeline: StrictStr = Field(default="bm25", max_length=100, description="Configured pipeline name, e.g. bm25.")
    collection: StrictStr | None = Field(default=None, max_length=100, description="Collection; default: the first served.")
    lang: StrictStr | None = Field(default=None, max_length=16, description="ISO 639-1 language of the query.")
    explain: StrictBool = Field(default=False, description="Include per-stage scores and timings.")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must not be empty or whitespace")
        if len(value) > MAX_QUERY_CHARS:
            raise ValueError(f"query is {len(value)} characters; the limit is {MAX_QUERY_CHARS}")
        return value


class SearchHit(BaseModel):
    rank: int
    doc_id: str
    score: float
    title: str = ""
    text: str = ""
    stage_scores: dict[str, float] | None = None


class SearchResponse(BaseModel):
    query: str
    pipeline: str
    collection: str
    hits: list[SearchHit]
    took_ms: float
    degraded: list[str] = Field(default_factory=list, description="Stages that failed open (their input order was kept).")
    timings_ms: dict[str, float] | None = None


class PipelineStatus(BaseModel):
    name: str
    collection: str
    loaded: bool
    reason: str = ""
    description: str = ""


class ErrorResponse(BaseModel):
    detail: str
