"""The ``by_language`` routing stage (pipelines ``ml`` / ``ml-fusion``), with in-memory stages and a fake detector."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import StageConfig
from pipeline.core.errors import ConfigError
from pipeline.core.language import Detection, LanguageError
from pipeline.core.stage import Pipeline, Stage
from pipeline.core.testing import StageContract
from pipeline.core.types import Hit, Query, sort_hits
from pipeline.registry import BuildContext, build_pipeline, load_config, parse_config, register_stage, required_indexes
from pipeline.stages.by_language import ByLanguage

REPO = Path(__file__).resolve().parent.parent


class RouteRetriever(Stage):
    """Docs ``<tag>-0..2`` for every query (score 3, 2, 1); records the queries (and langs) it saw."""

    name = "fusion"

    def __init__(self, tag: str):
        self.tag, self.seen = tag, []

    def transform(self, queries, candidates=None):
        self.seen.extend(queries)
        return {q.query_id: [Hit(q.query_id, f"{self.tag}-{i}", 3.0 - i, {self.name: 3.0 - i}) for i in range(3)]
                for q in queries}


class Reverse(Stage):
    """A reranker that reverses its candidates and reports the language it was given."""

    name = "rerank"
    needs_candidates = True

    def transform(self, queries, candidates=None):
        return {q.query_id: sort_hits([h.rescored(self.name, float(i)) for i, h in enumerate(candidates[q.query_id])])
                for q in queries}

    def language_choice(self, query):
        return {"lang": query.lang, "detected": False, "module": f"adapter:{query.lang}", "modules": [query.lang],
                "supported": True}


class KeywordDetector:
    """'Wer'/'wie' -> de, '¿' -> es, digits only -> undetectable, else en."""

    def detect(self, text: str) -> Detection:
        if text.strip().isdigit():
            return Detection(None, 0.0, True)
        if text.startswith(("Wer", "Wie")):
            return Detection("de", 0.99, True)
        return Detection("es" if text.startswith("¿") else "en", 0.9, True)


def routed(first_stage_only: bool = False) -> tuple[ByLanguage, dict[str, RouteRetriever]]:
    retrievers = {name: RouteRetriever(name) for name in ("ml-de", "ml-es", "ml-generic")}
    pipes = {name: Pipeline([r] if first_stage_only else [r, Reverse()], name=name) for name, r in retrievers.items()}
    return ByLanguage(pipes, {"de": "ml-de", "es": "ml-es"}, "ml-generic", KeywordDetector()), retrievers


def routes_of(results):
    return {qid: hits[0].doc_id.rsplit("-", 1)[0] for qid, hits in results.items()}


class TestByLanguageContract(StageContract):
    @pytest.fixture
    def stage(self):
        return routed()[0]


def test_queries_in_two_languages_go_to_their_own_routes_and_come_back_in_order():
    stage, retrievers = routed()
    queries = [Query("a", "Wer gewann?"), Query("b", "¿Quién ganó?"), Query("c", "Wie alt?"), Query("d", "¿Dónde?")]
    results = stage(queries)
    assert list(results) == ["a", "b", "c", "d"]
    assert routes_of(results) == {"a": "ml-de", "b": "ml-es", "c": "ml-de", "d": "ml-es"}
    assert [q.query_id for q in retrievers["ml-de"].seen] == ["a", "c"]  # one batch per route
    assert [q.lang for q in retrievers["ml-de"].seen] == ["de", "de"]  # the route gets the resolved language
    assert retrievers["ml-generic"].seen == []
    hit = results["a"][0]
    assert hit.doc_id == "ml-de-2" and "rerank" in hit.stage_scores  # the whole route ran (reranker reversed)
    assert hit.stage_scores["by_language:ml-de"] == hit.score == hit.stage_scores["by_language"]


@pytest.mark.parametrize("query", [Query("x", "12345"), Query("x", "Hello", lang="sw"), Query("x", "Wer?", lang="12"),
                                   Query("x", "Wer?", lang="xx")])
def test_undetectable_unknown_or_malformed_language_goes_to_default(query):
    stage, retrievers = routed()
    assert routes_of(stage([query])) == {"x": "ml-generic"}
    assert [q.query_id for q in retrievers["ml-generic"].seen] == ["x"]


def test_explicit_lang_wins_over_detection():
    stage, _ = routed()
    results = stage([Query("a", "Wer gewann?", lang="ES"), Query("b", "Who won?", lang="de-AT")])
    assert routes_of(results) == {"a": "ml-es", "b": "ml-de"}


def test_first_stage_only_runs_the_routes_first_stage():
    stage, _ = routed(first_stage_only=True)
    results = stage([Query("a", "Wer gewann?"), Query("b", "Hi")])
    assert [h.doc_id for h in results["a"]] == ["ml-de-0", "ml-de-1", "ml-de-2"]  # retrieval order, not reversed
    assert all("rerank" not in h.stage_scores for hs in results.values() for h in hs)
    assert stage.language_choice(Query("a", "Wer gewann?")) == {
        "lang": "de", "detected": True, "module": "none (no reranker)", "modules": [], "supported": True, "route": "ml-de"}


def test_language_choice_names_the_route_and_rejects_malformed_codes():
    stage, _ = routed()
    choice = stage.language_choice(Query("q", "¿Quién?"))
    assert choice["route"] == "ml-es" and choice["lang"] == "es" and choice["detected"] is True
    assert choice["module"] == "adapter:es"
    assert stage.language_choice(Query("q", "Hi", lang="sw"))["route"] == "ml-generic"
    with pytest.raises(LanguageError):  # the service answers 400 before running anything
        stage.language_choice(Query("q", "Hi", lang="12"))


def test_route_timings_are_reported():
    stage, _ = routed()
    run = Pipeline([stage], name="ml").run([Query("a", "Wer?"), Query("b", "Hi")])
    assert {"by_language.ml-de", "by_language.ml-generic"} <= set(run.timings_ms)


# --- built from a config: routes refer to other pipelines, their stages are built once and shared


class FakeConfig(StageConfig):
    tag: str = ""


BUILT: list[str] = []


def _retriever(cfg, ctx):
    BUILT.append(cfg.tag)
    return RouteRetriever(cfg.tag)


register_stage("test_route_retriever", FakeConfig, _retriever)
register_stage("test_route_reverse", FakeConfig, lambda cfg, ctx: Reverse())

ROUTED = {
    "pipelines": {
        **{f"p-{t}": {"stages": [{"type": "test_route_retriever", "tag": f"p-{t}", "cutoff": 2},
                                 {"type": "test_route_reverse"}]} for t in ("de", "generic")},
        "ml": {"stages": [{"type": "by_language", "routes": {"DE": "p-de"}, "default": "p-generic"}]},
        "ml-fusion": {"stages": [{"type": "by_language", "routes": {"de": "p-de"}, "default": "p-generic",
                                  "first_stage_only": True}]},
    }
}


def test_built_from_config_shares_route_stages_and_applies_cutoffs(tmp_path, monkeypatch):
    import pipeline.stages.by_language as by_language

    monkeypatch.setattr(by_language, "LanguageDetector", KeywordDetector)
    ctx = BuildContext(tmp_path, "c", parse_config(ROUTED))
    BUILT.clear()
    ml, fusion = build_pipeline("ml", ctx), build_pipeline("ml-fusion", ctx)
    assert sorted(BUILT) == ["p-de", "p-generic"]  # each route's first stage built once for both pipelines
    results = ml([Query("a", "Wer?"), Query("b", "Hi")])
    assert [h.doc_id for h in results["a"]] == ["p-de-1", "p-de-0"]  # cutoff 2, then reversed
    assert [h.doc_id for h in fusion([Query("b", "Hi")])["b"]] == ["p-generic-0", "p-generic-1"]


def test_shared_route_stages_are_rebuilt_on_service_reload(tmp_path):
    from service.engine import _mentions

    ctx = BuildContext(tmp_path, "c", parse_config(ROUTED))
    build_pipeline("ml-fusion", ctx)
    keys = [k for k in ctx._shared if isinstance(k, tuple) and k[0] == "by_language"]
    assert keys and all(_mentions(k, {"c"}, str(tmp_path)) for k in keys)  # index-derived: dropped on reload


def test_language_info_of_the_service_carries_the_route():
    from service.schemas import LanguageInfo

    stage, _ = routed(first_stage_only=True)
    assert LanguageInfo(**stage.language_choice(Query("q", "Hi", lang="sw"))).route == "ml-generic"


@pytest.mark.parametrize(("route", "message"), [("nope", "route 'nope' is not a configured pipeline"),
                                                ("ml-fusion", "route 'ml-fusion' routes again")])
def test_config_rejects_bad_routes(route, message):
    raw = {"pipelines": {**ROUTED["pipelines"], "bad": {"stages": [{"type": "by_language", "routes": {"de": route},
                                                                    "default": "p-generic"}]}}}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_multilingual_config_routes_ml_and_ml_fusion_to_the_e5_pipelines():
    config = load_config(REPO / "configs" / "multilingual.yaml")
    for name, first_only in (("ml", False), ("ml-fusion", True)):
        (stage,) = config.pipelines[name].stages
        assert stage["type"] == "by_language" and stage["default"] == "ml-e5-generic"
        assert stage["first_stage_only"] is first_only
        assert stage["routes"] == {lang: f"ml-e5-{lang}" for lang in ("en", "de", "es", "ar", "zh", "ru")}
    for route in [f"ml-e5-{x}" for x in ("en", "de", "es", "ar", "zh", "ru", "generic")]:
        fusion, rerank = config.pipelines[route].stages
        assert fusion["type"] == "fusion" and fusion["cutoff"] == 30
        # the served module (models/ml-modules/MODEL_CARD.md) at its dev-chosen alpha, for every language
        assert {k: rerank[k] for k in ("type", "model", "modules", "kind", "ranking", "languages", "fallback",
                                       "interpolate")} == {
            "type": "modular_ce", "model": "e5", "modules": "ml-modules", "kind": "lora", "ranking": None,
            "languages": [], "fallback": ["ranking-all"], "interpolate": 0.6}
    for lang in ("en", "de", "es", "ar", "zh", "ru"):  # the same base and ranking module + a language module per query
        for name, kind in ((f"ml-{lang}", "lora"), (f"ml-sftm-{lang}", "sftm")):
            rerank = config.pipelines[name].stages[-1]
            assert (rerank["model"], rerank["modules"], rerank["kind"], rerank["ranking"]) == ("e5", "ml-modules", kind,
                                                                                               "ranking-all")
            assert "languages" not in rerank and rerank["fallback"] == ["ranking-all"]  # the six, else the ranking module
            assert (REPO / "models" / "ml-modules" / kind / lang).is_dir()
    assert config.pipelines["ml-generic"].stages[-1] == config.pipelines["ml-e5-generic"].stages[-1]
    assert all(stage.get("model") in (None, "e5") for pipe in config.pipelines.values() for stage in pipe.stages)
    indexes = set(required_indexes(config, "ml"))
    assert indexes == {*(f"lucene-{x}" for x in ("en", "de", "es", "ar", "zh", "ru", "generic")), "e5"}
    assert required_indexes(config, "ml-fusion") == required_indexes(config, "ml")
