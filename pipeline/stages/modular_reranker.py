"""``type: modular_ce``: a cross-encoder whose ranking + language modules are chosen per query by ``query.lang``.

A config + builder of :class:`~pipeline.stages.rerank.RerankStage` with a
:class:`~pipeline.scorers.modular.ModularScorer` over every candidate. With ``interpolate: alpha`` the
final score is, per query over its candidates, ``alpha * minmax(reranker) + (1 - alpha) * minmax(incoming
score)``; the hit keeps the raw reranker logit under ``modular_ce`` and the mix under
``modular_ce_interpolated``.

Stages share what they can through the build context: one base + modules per (model, modules folder, kind,
module names, device, merge mode), and one scorer per identical scoring config, so stages that differ only in
their index (the six ``ml-e5-<lang>`` stages and ``ml-e5-generic``) hold one model between them.

Config example::

    - {type: modular_ce, index: lucene-de, model: e5, modules: ml-modules, kind: lora, ranking: ranking-all,
       languages: [en, de, es, ar, zh, ru], fallback: [ranking-all], interpolate: 0.6}
"""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import Field

from pipeline.core.build_context import BuildContext, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.language import LanguageDetector, normalize_lang
from pipeline.scorers.modular import ModularScorer, add_modules, load_registry
from pipeline.scorers.passages import Passages
from pipeline.stages.rerank import RerankStage
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import DocStore
from pipeline.storage.index_store import resolve


class ModularCEConfig(StageConfig):
    type: str = "modular_ce"
    index: str = "lucene"
    """Index whose document store gives the candidates' texts."""
    model: str = "e5"
    """Base reranker folder under the models dir (or ``minilm``): the one the modules were trained on."""
    modules: str = "ml-modules"
    kind: Literal["lora", "sftm"] = "lora"
    ranking: str | None = "ranking-all"
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


def module_names(cfg: ModularCEConfig) -> list[str]:
    """Every module a stage needs loaded: its languages', its fallback and its ranking module."""
    return sorted({*(normalize_lang(x) for x in cfg.languages), *cfg.fallback, *([cfg.ranking] if cfg.ranking else [])})


def registry_key(cfg: ModularCEConfig, device: str | None) -> tuple:
    """Build-context key of the loaded base + modules: every stage with the same model, modules folder, kind, device
    and merge mode shares one copy, whatever its index and modules (e.g. the six ``ml-e5-<lang>`` stages and the six
    ``ml-<lang>`` ones); a stage adds the modules it needs that the shared registry lacks.

    Each part is labelled (``model=e5``), so no part equals an index name (``e5`` is one): the service keeps
    models across a reload and rebuilds only what names an index (``service.engine._mentions``)."""
    return ("modular_ce", f"model={cfg.model}", f"modules={cfg.modules}/{cfg.kind}", f"device={device}",
            f"merge_lora={cfg.merge_lora}")


def scorer_key(cfg: ModularCEConfig, device: str | None) -> tuple:
    """Key of the scorer: stages that differ only in their index share one :class:`ModularScorer`."""
    return (*registry_key(cfg, device), "scorer", f"names={','.join(module_names(cfg))}", f"ranking={cfg.ranking}",
            f"languages={','.join(normalize_lang(x) for x in cfg.languages)}", f"fallback={','.join(cfg.fallback)}",
            f"detect={cfg.detect}", f"max_length={cfg.max_length}", f"batch_size={cfg.batch_size}")


def _build(cfg: ModularCEConfig, ctx: BuildContext) -> RerankStage:
    folder, _ = resolve(ctx.index_root, ctx.collection, cfg.index)
    store = DocStore(folder / DOCSTORE)
    # no factory below calls ctx.shared itself (its lock is not re-entrant)
    registry, tokenizer = ctx.shared(registry_key(cfg, ctx.device), lambda: load_registry(
        cfg.model, ctx.models_dir, cfg.modules, cfg.kind, module_names(cfg), ctx.device, cfg.merge_lora))
    # a registry shared with stages that need other modules: add this stage's (a module is only ever added whole)
    add_modules(registry, cfg.model, ctx.models_dir, cfg.modules, cfg.kind, module_names(cfg))
    detector = ctx.shared("language-detector", LanguageDetector) if cfg.detect else None
    # every scorer over this registry's tokenizer takes the same lock (fast tokenizers refuse concurrent calls)
    tokenizer_lock = ctx.shared((*registry_key(cfg, ctx.device), "tokenizer-lock"), threading.Lock)
    ranking = [cfg.ranking] if cfg.ranking else []
    langs = [normalize_lang(x) for x in cfg.languages]
    scorer = ctx.shared(scorer_key(cfg, ctx.device), lambda: ModularScorer(
        registry, tokenizer, {lang: [*ranking, lang] for lang in langs}, fallback=cfg.fallback, kind=cfg.kind,
        detector=detector, max_length=cfg.max_length, batch_size=cfg.batch_size, tokenizer_lock=tokenizer_lock,
        keep_modules=True))  # the registry's model is its own (load_registry): a same-language stream pays no swap
    passages = Passages(store, titles=False)  # the text alone, as the language modules were trained
    return RerankStage(scorer, passages, top_n=None, interpolate=cfg.interpolate, name="modular_ce")


register_stage("modular_ce", ModularCEConfig, _build)
