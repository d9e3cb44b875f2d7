"""Generate search questions for documents with a small causal LM (InPars "vanilla" few-shot prompting).

The prompt is a handful of general document -> question examples written for this project (a
household chore, a software tool, a physics result, a historical event: none comes from a test
collection), then the target document (its first ``DOC_WORDS`` words) and ``Question:``; the
model completes one line. Generation is batched with left padding (GPU: bfloat16; CPU works for
small runs) and stops at the first newline of every sequence. ``per_doc > 1`` samples
(temperature 0.7 unless given); one question per document is greedy.

The default model is the packaged SmolLM2-135M-Instruct (GGUF, loaded and cached by
:func:`pipeline.scorers.llm_loading.load_causal_lm`). Filtering the output is
:mod:`training.cross_encoder.data.round_trip`; the whole command is
:mod:`training.cross_encoder.data.generated_queries`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

DOC_WORDS = 200
SAMPLING_TEMPERATURE = 0.7

FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("To remove limescale from a kettle, fill it halfway with equal parts water and white vinegar, bring it to the "
     "boil and let it stand for an hour. Rinse it several times with clean water before use: the acid dissolves the "
     "calcium deposits that hard water leaves behind.",
     "how do I remove limescale from a kettle"),
    ("rsync copies files between computers or directories. It compares files by size and modification time and sends "
     "only the parts that changed, which makes repeated backups over a slow network fast. It can keep permissions, "
     "links and timestamps, and it runs over ssh.",
     "which tool copies only changed files for a backup over ssh"),
    ("In the photoelectric effect, light shining on a metal surface ejects electrons. Einstein explained in 1905 that "
     "light comes in quanta whose energy is proportional to frequency, so below a threshold frequency no electrons are "
     "emitted however intense the light is.",
     "why does light below a threshold frequency not eject electrons from a metal"),
    ("The printing press with movable metal type, developed by Johannes Gutenberg around 1450 in Mainz, made books far "
     "cheaper to produce. Within fifty years presses operated in more than two hundred European cities, and the spread "
     "of printed pamphlets helped the Reformation reach a wide audience.",
     "what effect did Gutenberg's printing press have on the Reformation"),
)


def build_prefix(examples: Sequence[tuple[str, str]] = FEW_SHOT) -> str:
    """The few-shot part of every prompt."""
    return "".join(f"Document: {doc}\nQuestion: {question}\n\n" for doc, question in examples)


def document_prompt(prefix: str, title: str, text: str, words: int = DOC_WORDS) -> str:
    """``prefix`` + the document (title first, then text; at most ``words`` words on one line) + ``Question:``."""
    body = " ".join(f"{title.strip().rstrip('.')}. {text}".split() if title.strip() else text.split())
    clipped = " ".join(body.split()[:words])
    return f"{prefix}Document: {clipped}\nQuestion:"


def clean_completion(text: str) -> str:
    """The first line of a completion, without surrounding spaces/quotes or a repeated ``Question:`` label."""
    line = text.strip().split("\n", 1)[0].strip()
    if line.lower().startswith("question:"):
        line = line[len("question:"):].strip()
    return line.strip("\"'` ").strip()


@dataclass(frozen=True)
class GenerationSettings:
    """What decides the generated text; its digest names the resumable candidates log."""

    model: str = "smollm2-135m"
    per_doc: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 32
    doc_words: int = DOC_WORDS
    seed: int = 13
    prefix: str = build_prefix()

    def effective_temperature(self) -> float:
        return self.temperature or (SAMPLING_TEMPERATURE if self.per_doc > 1 else 0.0)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def newline_token_ids(tokenizer: Any) -> list[int]:
    """Every vocabulary id whose text holds a newline (byte-level BPE has several: '\\n', '\\n\\n', '.\\n', ...)."""
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)])
    return [i for i, t in enumerate(texts) if "\n" in t]


class StopAtNewline:
    """A transformers stopping criterion: a sequence is done once it generated a newline token."""

    def __init__(self, newline_ids: Sequence[int], prompt_length: int):
        import torch

        self.ids = torch.tensor(sorted(set(newline_ids)) or [-1])
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[:, self.prompt_length:]
        if new.shape[1] == 0:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return torch.isin(new, self.ids.to(new.device)).any(dim=1)


class QueryGenerator:
    """Batched, left-padded generation of ``per_doc`` questions per document."""

    def __init__(self, model: Any, tokenizer: Any, settings: GenerationSettings, device: str = "cpu"):
        self.model, self.tokenizer, self.settings, self.device = model, tokenizer, settings, device
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.newline_ids = newline_token_ids(tokenizer)

    def generate(self, docs: Sequence[tuple[str, str]], batch_seed: int = 0) -> list[list[str]]:
        """``docs``: ``(title, text)`` pairs -> ``per_doc`` cleaned questions each (an empty string if none)."""
        import torch
        from transformers import StoppingCriteriaList

        s = self.settings
        prompts = [document_prompt(s.prefix, title, text, s.doc_words) for title, text in docs]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        width = enc["input_ids"].shape[1]
        temperature = s.effective_temperature()
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95} if temperature > 0 else {
            "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        torch.manual_seed(s.seed * 1_000_003 + batch_seed)
        with torch.inference_mode():
            out = self.model.generate(
                **enc, max_new_tokens=s.max_new_tokens, num_return_sequences=s.per_doc,
                pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([StopAtNewline(self.newline_ids, width)]), **sampling)
        texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        cleaned = [clean_completion(t) for t in texts]
        return [cleaned[i * s.per_doc:(i + 1) * s.per_doc] for i in range(len(docs))]


def model_key(model: str) -> str:
    """``smollm2-135m`` for the packaged GGUF wherever its file lies (a GPU job names the file by path)."""
    from pipeline.scorers.llm_loading import SMOLLM2, SMOLLM2_FILE

    return SMOLLM2 if Path(model).name == SMOLLM2_FILE else model


def load_generator(settings: GenerationSettings, device: str | None = None,
                   model_path: str | None = None) -> QueryGenerator:
    """The packaged SmolLM2, or the GGUF file / transformers folder ``model_path`` (default ``settings.model``)."""
    import torch

    from pipeline.scorers.llm_loading import load_causal_lm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_causal_lm(model_path or settings.model, device=device)
    if device == "cpu":
        logger.info("generating on the CPU: fine for a few hundred documents; use --device cuda for thousands")
    return QueryGenerator(model, tokenizer, settings, device)
