"""Listwise ranking with a causal LM: FIRST (first-token logits) or full generation.

One prompt holds the query and m passages labelled ``[A] .. [T]``; the assistant turn
starts with ``[``. FIRST (Reddy et al., 2024) ranks the window by the logits of the
identifier tokens at that first generated position: one forward pass per window. The
``generative`` mode lets the same model write the whole permutation (``B] > [A] > ...``),
parsed by :func:`pipeline.scorers.permutation.parse_permutation`. A sliding window (size/stride,
e.g. 20/10) moves from the bottom of the list to the top; windows of several queries are
batched into one forward pass. Every passage comes back exactly once, whatever the model outputs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

from pipeline.core.errors import ConfigError
from pipeline.core.types import Query
from pipeline.scorers.base import ListwiseScorer
from pipeline.scorers.permutation import MAX_WINDOW, is_clean, labels, parse_permutation

SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query."
HEAD = "I will provide you with {m} passages, each indicated by an identifier []. Rank the passages based on their relevance to the search query: {query}\n\n"
TAIL = ("\nSearch Query: {query}\nRank the {m} passages above based on their relevance to the search query. "
        "List all identifiers in descending order of relevance, e.g. [B] > [A]. Only respond with the ranking.")
_SPLIT = "\u0000PASSAGES\u0000"



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



class FirstListwiseScorer(ListwiseScorer):
    """Sliding-window listwise ranking with a causal LM (FIRST or generative); every passage comes back once.

    Windows of several queries share one forward pass (``batch_size`` windows at most).

    Example::

        scorer = FirstListwiseScorer(model, tokenizer, window=20, stride=10)
        scorer.rank("what is bm25", passages)   # positions into passages, best first
    """

    def __init__(self, model: Any, tokenizer: Any, mode: str = "first", window: int = 20, stride: int = 10,
                 passage_tokens: int = 80, query_tokens: int = 48, batch_size: int = 16):
        if mode not in ("first", "generative"):
            raise ConfigError(f"listwise mode must be 'first' or 'generative', got {mode!r}")
        if not 2 <= window <= MAX_WINDOW or not 1 <= stride < window:
            raise ConfigError(f"need 2 <= window <= {MAX_WINDOW} and 1 <= stride < window, got {window}/{stride}")
        self.model, self.tokenizer = model, tokenizer
        self.mode, self.window, self.stride, self.batch_size = mode, window, stride, batch_size
        self.prompt = ListwisePrompt(tokenizer, passage_tokens, query_tokens)
        self.label_ids = identifier_token_ids(tokenizer, window)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._lock = threading.Lock()
        self.stats = {"windows": 0, "repaired": 0}
        """Windows ranked, and generated permutations that needed repair (repeats, missing ids, garbage)."""

    def rank_batch(self, queries: Sequence[Query], passages: Sequence[Sequence[str]]) -> list[list[int]]:
        """Windows from the bottom of each list to its top (RankGPT order), step by step over all queries."""
        orders = [list(range(len(ps))) for ps in passages]
        spans = [window_spans(len(ps), self.window, self.stride) for ps in passages]
        for step in range(max((len(s) for s in spans), default=0)):
            jobs = [(i, spans[i][step]) for i in range(len(queries)) if step < len(spans[i])]
            for start in range(0, len(jobs), self.batch_size):
                chunk = jobs[start : start + self.batch_size]
                windows = [(queries[i].text, [passages[i][j] for j in orders[i][a:b]]) for i, (a, b) in chunk]
                for (i, (a, b)), order in zip(chunk, self.rank_windows(windows), strict=True):
                    part = orders[i][a:b]
                    orders[i][a:b] = [part[j] for j in order]
        return orders

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



def _argsort_desc(scores: Sequence[float]) -> list[int]:
    """Positions by descending score; NaN counts as lowest, ties keep input order."""
    keyed = [(-s if s == s else float("inf"), i) for i, s in enumerate(scores)]
    return [i for _, i in sorted(keyed)]


def _device_of(model: Any):
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"


