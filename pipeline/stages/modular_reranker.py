"""``type: modular_ce``: a cross-encoder whose ranking + language modules are chosen per query by ``query.lang``.

A config + builder of :class:`~pipeline.stages.rerank.RerankStage` with a
:class:`~pipeline.scorers.modular.ModularScorer` over every candidate. With ``interpolate: alpha`` the
final score is, per query over its candidates, ``alpha * minmax(reranker) + (1 - alpha) * minmax(incoming
score)``; the hit keeps the raw reranker logit under ``modular_ce`` and the mix under
``modular_ce_interpolated``.

Config example::

    - {type: modular_ce, index: lucene-de, model: ce-minilm-scifact, modules: lang-modules, kind: lora,
       ranking: ranking, languages: [en, de, es, ar, zh, ru], interpolate: 0.3}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.core.build_context import BuildContext, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.language import LanguageDetector, normalize_lang
from pipeline.scorers.modular import ModularScorer, load_registry
from pipeline.scorers.passages import Passages
from pipeline.stages.rerank import RerankStage
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import DocStore
from pipeline.storage.index_store import resolve


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


def _build(cfg: ModularCEConfig, ctx: BuildContext) -> RerankStage:
    folder, _ = resolve(ctx.index_root, ctx.collection, cfg.index)
    store = DocStore(folder / DOCSTORE)
    langs = [normalize_lang(x) for x in cfg.languages]
    names = sorted({*langs, *cfg.fallback, *([cfg.ranking] if cfg.ranking else [])})
    key = ("modular_ce", cfg.model, cfg.modules, cfg.kind, tuple(names), ctx.device, cfg.merge_lora)
    registry, tokenizer = ctx.shared(key, lambda: load_registry(cfg.model, ctx.models_dir, cfg.modules, cfg.kind,
                                                               names, ctx.device, cfg.merge_lora))
    ranking = [cfg.ranking] if cfg.ranking else []
    detector = ctx.shared("language-detector", LanguageDetector) if cfg.detect else None

    scorer = ModularScorer(registry, tokenizer, {lang: [*ranking, lang] for lang in langs}, fallback=cfg.fallback,
                           kind=cfg.kind, detector=detector, max_length=cfg.max_length, batch_size=cfg.batch_size)
    passages = Passages(store, titles=False)  # the text alone, as the language modules were trained
    return RerankStage(scorer, passages, top_n=None, interpolate=cfg.interpolate, name="modular_ce")


register_stage("modular_ce", ModularCEConfig, _build)
