"""``type: by_language``: route each query to the pipeline of its language (issue 20's ``ml`` pipeline).

The query's language is the request's ``lang`` (normalised), else the packaged detector's guess
(:func:`~pipeline.core.language.resolve_language`). ``routes`` maps a language code to the name of
another pipeline of the same config; a language without a route, an undetectable query or a malformed
code goes to ``default``. A batch is grouped by route, each group runs through its route's stages
(only the first one with ``first_stage_only``, e.g. the fusion, for comparison), and the results come
back for every query of the batch. Each hit records the route under ``by_language:<route>`` (and its
score under the stage's name); ``language_choice`` (the service's ``language``) names the route; the
explain timings have one entry per route that ran (``<stage>.<route>``).

Config example::

    - {type: by_language, routes: {de: ml-de, es: ml-es}, default: ml-generic, first_stage_only: false}
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Sequence

from pydantic import Field, field_validator

from pipeline.core.build_context import BuildContext, build_stage, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.errors import ConfigError
from pipeline.core.language import Detection, LanguageDetector, LanguageError, language_info, normalize_lang
from pipeline.core.stage import Pipeline, Stage, phase
from pipeline.core.types import Query, Results

TYPE = "by_language"


class ByLanguageConfig(StageConfig):
    type: str = TYPE
    routes: dict[str, str] = Field(min_length=1)
    """Language code (ISO 639-1) -> name of a pipeline of the same config."""
    default: str
    """Pipeline for every other language, undetectable queries and malformed codes."""
    first_stage_only: bool = False
    """Run only the first stage of each route (its retrieval/fusion), e.g. ``ml-fusion``."""
    detect: bool = True
    """Detect the language of queries without ``lang`` (False: they go to ``default``)."""

    @field_validator("routes")
    @classmethod
    def _codes(cls, routes: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for code, target in routes.items():
            try:
                lang = normalize_lang(code)
            except LanguageError as exc:
                raise ValueError(str(exc)) from None
            if lang in out:
                raise ValueError(f"language {lang!r} is routed twice")
            out[lang] = target
        return out

    def pipeline_refs(self) -> list[str]:
        """The pipelines this stage runs, each once, default last."""
        return [*dict.fromkeys(t for t in self.routes.values() if t != self.default), self.default]


class ByLanguage(Stage):
    """Run each query through the pipeline of its language.

    Example::

        ml = ByLanguage({"ml-de": de_pipeline, "ml-generic": generic}, {"de": "ml-de"}, "ml-generic", detector)
        results = ml([Query("1", "Wer gewann?"), Query("2", "Who won?", lang="sw")])
    """

    name = TYPE

    def __init__(self, pipelines: dict[str, Pipeline], routes: dict[str, str], default: str, detector=None):
        missing = sorted({*routes.values(), default} - set(pipelines))
        if missing:
            raise ConfigError(f"{TYPE}: no pipeline for routes {missing}")
        if any(p.needs_candidates for p in pipelines.values()):
            raise ConfigError(f"{TYPE}: every route must start with a retriever")
        self.pipelines, self.default, self.detector = pipelines, default, detector
        self.routes = {normalize_lang(code): target for code, target in routes.items()}

    def resolve(self, query: Query, strict: bool = False) -> tuple[Query, Detection, str]:
        """``(query with lang set, how the language was found, route name)``. A malformed ``lang`` raises
        LanguageError when ``strict``, else goes to the default route with ``lang=None``."""
        if query.lang:
            try:
                lang = normalize_lang(query.lang)
            except LanguageError:
                if strict:
                    raise
                return replace(query, lang=None), Detection(None, 0.0, False), self.default
            found = Detection(lang, 1.0, False)
        elif self.detector is not None:
            found = self.detector.detect(query.text)
        else:
            found = Detection(None, 0.0, False)
        return replace(query, lang=found.lang), found, self.routes.get(found.lang, self.default)

    def language_choice(self, query: Query) -> dict | None:
        resolved, found, route = self.resolve(query, strict=True)
        inner = language_info(self.pipelines[route], resolved)
        if inner is None:  # no language-aware stage on the route (e.g. fusion only)
            inner = {"module": "none (no reranker)", "modules": [], "supported": route != self.default}
        return {**inner, "lang": found.lang, "detected": found.detected, "route": route}

    def transform(self, queries: Sequence[Query], candidates: Results | None = None) -> Results:
        groups: dict[str, list[Query]] = {}
        for query in queries:
            resolved, _, route = self.resolve(query)
            groups.setdefault(route, []).append(resolved)
        merged: Results = {}
        for route, group in groups.items():
            with phase(route):
                run = self.pipelines[route].run(group)
            for qid, hits in run.results.items():
                merged[qid] = [h.rescored(self.name, h.score).rescored(f"{self.name}:{route}", h.score) for h in hits]
        return {q.query_id: merged.get(q.query_id, []) for q in queries}

    def notes(self) -> list[str]:
        return list(dict.fromkeys(note for p in self.pipelines.values() for note in p.notes()))

    def fast_path(self) -> dict | None:
        out = {name: fp for name, p in self.pipelines.items() if (fp := p.fast_path()) is not None}
        return out or None


def route_stages(ctx: BuildContext, pipeline: str, first_stage_only: bool) -> Pipeline:
    """The stages of ``pipeline`` (the first alone if asked), each built once per context and shared
    between the routing stages that use it (``ml`` and ``ml-fusion`` run the same fusion objects)."""
    if pipeline not in ctx.config.pipelines:
        raise ConfigError(f"{TYPE}: route {pipeline!r} is not a configured pipeline (configured: {sorted(ctx.config.pipelines)})")
    raws = ctx.config.pipelines[pipeline].stages
    raws = raws[:1] if first_stage_only else raws
    if any(raw.get("type") == TYPE for raw in raws):
        raise ConfigError(f"{TYPE}: route {pipeline!r} routes again (a route must be a plain pipeline)")
    # keyed by the collection: the service rebuilds index-derived resources on reload (service.engine._mentions)
    cache: dict[Any, Stage] = ctx.shared((TYPE, "stages", ctx.collection), dict)
    lock: threading.RLock = ctx.shared((TYPE, "lock", ctx.collection), threading.RLock)
    stages = []
    with lock:  # not ctx.shared: a builder calls ctx.shared itself, and its lock is not re-entrant
        for i, raw in enumerate(raws):
            if (pipeline, i) not in cache:
                cache[(pipeline, i)] = build_stage(raw, ctx, f"pipelines.{pipeline}.stages[{i}]")
            stages.append(cache[(pipeline, i)])
    return Pipeline(stages, [raw.get("cutoff") for raw in raws], name=pipeline)


def _build(cfg: ByLanguageConfig, ctx: BuildContext) -> ByLanguage:
    pipelines = {name: route_stages(ctx, name, cfg.first_stage_only) for name in cfg.pipeline_refs()}
    detector = ctx.shared("language-detector", LanguageDetector) if cfg.detect else None
    return ByLanguage(pipelines, cfg.routes, cfg.default, detector)


register_stage(TYPE, ByLanguageConfig, _build)

__all__ = ["ByLanguage", "ByLanguageConfig", "route_stages"]
