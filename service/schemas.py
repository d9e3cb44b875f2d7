"""Request and response models of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

MAX_QUERY_CHARS = 2048
"""Documented query length limit (characters); the service enforces ``Settings.max_query_chars``."""


def _unicode_text(value: str) -> str:
    """Refuse lone surrogates (``"\\ud800"`` in JSON): not Unicode text, so not encodable as UTF-8 (422, not a 400/503 later)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text contains a lone surrogate at position {exc.start}: send valid Unicode") from None
    return value


Text = Annotated[StrictStr, AfterValidator(_unicode_text)]
"""A request string: strict (no coercion) and valid Unicode."""


def _query_text(value: str) -> str:
    if not value.strip():
        raise ValueError("query must not be empty or whitespace")
    if len(value) > MAX_QUERY_CHARS:
        raise ValueError(f"query is {len(value)} characters; the limit is {MAX_QUERY_CHARS}")
    return value


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Text = Field(description="Query text; not empty, at most 2048 characters.")
    k: StrictInt = Field(default=10, ge=1, le=1000, description="Number of hits to return (1..1000).")
    pipeline: Text = Field(default="bm25", max_length=100, description="Configured pipeline name, e.g. bm25.")
    collection: Text | None = Field(default=None, max_length=100, description="Collection; default: the first served.")
    lang: Text | None = Field(default=None, max_length=16, description="ISO 639-1 language of the query.")
    explain: StrictBool = Field(default=False, description="Include per-stage scores and timings.")
    highlight: StrictBool = Field(default=False, description="Add a snippet around the matches and the offsets of the "
                                  "matching words (as the collection's analyzer matches them: 'cell' marks 'cells').")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _query_text(value)


class SearchHit(BaseModel):
    rank: int
    doc_id: str
    score: float
    title: str = ""
    text: str = ""
    stage_scores: dict[str, float] | None = None
    snippet: str | None = Field(default=None, description="With highlight: the passage of text with the most matches.")
    highlights: list[list[int]] | None = Field(default=None, description="With highlight: [start, end) of each match in snippet.")
    title_highlights: list[list[int]] | None = Field(default=None, description="With highlight: matches in title.")


class LanguageInfo(BaseModel):
    """How a language-aware reranker treated the query (absent for pipelines without one)."""

    lang: str | None = Field(description="ISO 639-1 code: the request's, else the detected one (None: undetectable).")
    detected: bool = Field(description="True when the language was detected rather than given.")
    module: str = Field(description="'adapter:de' / 'sftm:de', or 'none (unsupported)' when the base reranker ran.")
    modules: list[str] = Field(default_factory=list, description="Modules applied, in order.")
    supported: bool = Field(description="False when the language has no module (fallback to the base reranker).")
    route: str | None = Field(default=None, description="Pipeline the query was routed to (routing pipelines such as 'ml').")


class SearchResponse(BaseModel):
    query: str
    pipeline: str
    collection: str
    hits: list[SearchHit]
    took_ms: float
    degraded: list[str] = Field(default_factory=list, description="Stages that failed open (their input order was kept).")
    timings_ms: dict[str, float] | None = None
    cached: bool = Field(default=False, description="Served from the result cache (timings are those of the original run).")
    language: LanguageInfo | None = Field(default=None, description="Language module used (multilingual pipelines).")


class BatchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Text | None = Field(default=None, max_length=200, description="Your id for this query; default: its position.")
    query: Text = Field(description="Query text; not empty, at most 2048 characters.")
    lang: Text | None = Field(default=None, max_length=16)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _query_text(value)


class BatchSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[BatchQuery] = Field(min_length=1, max_length=1000, description="At most Settings.max_batch queries (default 64).")
    k: StrictInt = Field(default=10, ge=1, le=1000)
    pipeline: Text = Field(default="bm25", max_length=100)
    collection: Text | None = Field(default=None, max_length=100)
    explain: StrictBool = False


class BatchResult(BaseModel):
    id: str
    query: str
    hits: list[SearchHit]
    degraded: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] | None = None
    cached: bool = False


class BatchSearchResponse(BaseModel):
    pipeline: str
    collection: str
    results: list[BatchResult]
    took_ms: float


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text = Field(max_length=100_000)
    title: Text | None = Field(default=None, max_length=1000)


class RerankRequest(BaseModel):
    """The shape of Cohere's and Jina's rerank APIs: a query and the documents to order."""

    model_config = ConfigDict(extra="forbid")

    query: Text = Field(description="Query text; not empty, at most 2048 characters.")
    documents: list[Text | RerankDocument] = Field(min_length=1, max_length=10_000, description="Strings or {text, title?}.")
    top_n: StrictInt | None = Field(default=None, ge=1, le=10_000, description="Return only the best n (default: all).")
    model: Text | None = Field(default=None, max_length=100, description="A reranking pipeline name (GET /pipelines); default: the first loaded.")
    return_documents: StrictBool = False
    collection: Text | None = Field(default=None, max_length=100)
    max_tokens_per_doc: StrictInt | None = Field(default=None, ge=1, le=100_000, description="Cohere v2: read at most "
                                                 "this many tokens of each document (default: what the model reads).")
    truncate: StrictBool = Field(default=True, description="TEI: false turns a document over the token limit into a 422 "
                                 "instead of reading only its head.")
    raw_scores: StrictBool = Field(default=False, description="TEI: also return the reranker's raw score (a logit).")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _query_text(value)


class RerankedDocument(BaseModel):
    text: str
    title: str | None = None


class RerankResult(BaseModel):
    index: int = Field(description="Position of the document in the request.")
    relevance_score: float = Field(description="sigmoid(raw score), in [0, 1]; same order as the raw score.")
    raw_score: float | None = Field(default=None, description="The reranker's raw score (with raw_scores: true).")
    tokens: int = Field(description="Length of title + text in the reranker's tokens (words if it has no tokenizer).")
    truncated: bool = Field(description="True when only the first tokens of the document were read.")
    document: RerankedDocument | None = None


class RerankMeta(BaseModel):
    api_version: dict[str, str]
    billed_units: dict[str, int]
    warnings: list[str] = Field(default_factory=list, description="E.g. how many documents were truncated.")


class RerankResponse(BaseModel):
    """Cohere's rerank response (``id``, ``results``, ``meta``) plus the pipeline used and the time taken."""

    id: str
    results: list[RerankResult]
    meta: RerankMeta
    model: str
    took_ms: float


class ReloadResponse(BaseModel):
    swapped: list[str]
    unchanged: list[str]
    refused: dict[str, str]
    fallback: list[str] = Field(default_factory=list, description="Now serving an older good version: current failed its checks.")
    versions: dict[str, dict[str, str]]


class PipelineStatus(BaseModel):
    name: str
    collection: str
    loaded: bool
    reason: str = ""
    description: str = ""
    notes: list[str] = Field(default_factory=list, description="How its stages run where that differs from the config "
                             "(e.g. int8 asked for, fp32 used on a CPU without fast int8 products).")
    fast_path: dict[str, dict[str, Any]] | None = Field(
        default=None, description="Per reranking stage, how its model runs on this machine: device, precision, "
        "packing (padding-free batches, on a GPU), the attention kernel, compile, passage_cache (token ids kept).")


class ErrorResponse(BaseModel):
    detail: str | list[dict[str, Any]] = Field(description="A message, or the list of validation errors (422).")
