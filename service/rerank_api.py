"""What ``POST /rerank`` adds around a reranker: calibrated scores, a truncation report, Cohere's shape.

* **score**: ``relevance_score`` is ``sigmoid(raw)`` in [0, 1], like Cohere, Jina and TEI. It is a
  fixed monotone map of the reranker's logit, not a probability fitted to judged data (the
  cross-encoders are trained with ranking losses, which fix the order, not the scale); the order
  is exactly the raw order. ``raw_scores: true`` adds the raw logit as ``raw_score``.
* **truncation**: a reranker that exposes its tokenizer (``stage.scorer.tokenizer``, ``max_length``,
  ``query_max_tokens``: the cross-encoder) keeps only the first ``max_length - query - 3`` tokens of
  ``title + " " + text``. Every result says how many tokens its document had and whether it was cut;
  ``meta.warnings`` counts the cut ones. ``max_tokens_per_doc`` (Cohere v2) cuts earlier;
  ``truncate: false`` (TEI) turns a document over the limit into a 422 instead. Rerankers without a
  tokenizer count whitespace-separated words and have no limit of their own.

Example::

    prepared = prepare_documents(stage, "what is lava", docs, max_tokens_per_doc=256, truncate=True)
    scores = rerank_documents(stage, query, prepared.docs)
    calibrated(scores[0])  # in [0, 1]
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pipeline.core.errors import PipelineError
from pipeline.core.types import Document
from pipeline.scorers.passages import passage_text

API_VERSION = "2"
"""The Cohere rerank API version whose response shape this endpoint follows."""


class DocumentTooLongError(PipelineError):
    """``truncate: false`` and a document is over the token limit (422)."""


def calibrated(raw: float) -> float:
    """``sigmoid(raw)``, computed without overflow.

    >>> calibrated(0.0), round(calibrated(2.71), 4), round(calibrated(-3.84), 4)
    (0.5, 0.9376, 0.021)
    """
    if raw >= 0:
        return 1.0 / (1.0 + math.exp(-raw))
    e = math.exp(raw)
    return e / (1.0 + e)


@dataclass(frozen=True)
class Tokens:
    """How a reranker counts a document's tokens and how many it keeps for one query."""

    count: Callable[[list[str]], list[int]]
    cut: Callable[[str, int], str]
    model_limit: int | None
    """Passage tokens the model reads for this query (None: no limit of its own)."""
    unit: str = "tokens"


@dataclass
class PreparedDocuments:
    """The documents to score (cut where asked) and what truncation did to each."""

    docs: list[Document]
    tokens: list[int]
    truncated: list[bool]
    limit: int | None
    warnings: list[str] = field(default_factory=list)


def reranker_tokens(stage: Any, query: str) -> Tokens:
    """The reranker's own tokenizer and passage budget when it exposes them, else whitespace words."""
    scorer = getattr(stage, "scorer", None)
    scorer = getattr(scorer, "engine", scorer)  # a served scorer wraps the engine that owns the tokenizer
    tokenizer = getattr(scorer, "tokenizer", None)
    max_length = getattr(scorer, "max_length", None)
    if tokenizer is None or not isinstance(max_length, int):
        return Tokens(_count_words, _cut_words, None, unit="words")
    query_tokens = len(tokenizer(query, add_special_tokens=False)["input_ids"])
    query_tokens = min(query_tokens, getattr(scorer, "query_max_tokens", query_tokens))

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []

    def cut(text: str, n: int) -> str:
        if not getattr(tokenizer, "is_fast", False):
            return tokenizer.convert_tokens_to_string(tokenizer.tokenize(text)[:n])
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return text if n >= len(offsets) else text[: offsets[n - 1][1]] if n > 0 else ""

    return Tokens(count, cut, max(max_length - query_tokens - 3, 0))


def _count_words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def _cut_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def prepare_documents(stage: Any, query: str, docs: Sequence[Document], max_tokens_per_doc: int | None = None,
                      truncate: bool = True) -> PreparedDocuments:
    """Count each document's tokens, cut to ``max_tokens_per_doc``, and report (or refuse) truncation."""
    tokens = reranker_tokens(stage, query)
    limits = [n for n in (tokens.model_limit, max_tokens_per_doc) if n is not None]
    limit = min(limits) if limits else None
    texts = [passage_text(d) for d in docs]
    counts = tokens.count(texts)
    over = [limit is not None and n > limit for n in counts]
    if any(over) and not truncate:
        where = [i for i, o in enumerate(over) if o]
        raise DocumentTooLongError(
            f"{len(where)} document(s) (indices {where[:10]}) have more than {limit} {tokens.unit}, the limit for this "
            f"query{_why(tokens, max_tokens_per_doc)}; send shorter documents or truncate: true")
    out = list(docs)
    if max_tokens_per_doc is not None:
        out = [Document(d.doc_id, "", tokens.cut(t, max_tokens_per_doc)) if o else d
               for d, t, o in zip(docs, texts, over, strict=True)]
    warnings = []
    if any(over):
        warnings.append(f"{sum(over)} of {len(docs)} documents were truncated to their first {limit} {tokens.unit} "
                        f"(title and text){_why(tokens, max_tokens_per_doc)}; the rest of each was not read")
    if tokens.unit == "words":
        warnings.append("this reranker exposes no tokenizer: lengths are whitespace-separated words")
    return PreparedDocuments(out, counts, over, limit, warnings)


def _why(tokens: Tokens, max_tokens_per_doc: int | None) -> str:
    parts = []
    if tokens.model_limit is not None:
        parts.append(f"the model reads {tokens.model_limit} passage tokens next to this query")
    if max_tokens_per_doc is not None:
        parts.append(f"max_tokens_per_doc={max_tokens_per_doc}")
    return f" ({'; '.join(parts)})" if parts else ""


def response_id() -> str:
    """A fresh id for one response (Cohere returns a UUID)."""
    return str(uuid.uuid4())


def meta(documents: int, warnings: list[str]) -> dict[str, Any]:
    """Cohere's ``meta``: API version, billed units (one search unit per request here) and warnings."""
    return {"api_version": {"version": API_VERSION}, "billed_units": {"search_units": 1, "documents": documents},
            "warnings": warnings}
