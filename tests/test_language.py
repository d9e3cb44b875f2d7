"""Language codes, detection (real langdetect), and the XQuAD-R split by article."""

from __future__ import annotations

import pytest

from pipeline.core.language import LanguageDetector, LanguageError, language_info, normalize_lang, resolve_language
from pipeline.core.types import Query

pytest.importorskip("langdetect")


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector()


@pytest.mark.parametrize("code, expected", [("de", "de"), ("DE", "de"), ("zh-CN", "zh"), ("zh-tw", "zh"), ("pt_BR", "pt"),
                                            (" en ", "en")])
def test_normalize(code, expected):
    assert normalize_lang(code) == expected


@pytest.mark.parametrize("code", ["", "d", "deutsch", "1a", "../x", "e n"])
def test_normalize_rejects_malformed(code):
    with pytest.raises(LanguageError, match="invalid language code"):
        normalize_lang(code)


@pytest.mark.parametrize("text, lang", [
    ("How many points did the Panthers defense surrender?", "en"),
    ("Wie viele Punkte gab die Verteidigung der Panthers ab?", "de"),
    ("¿Cuántos puntos concedió la defensa de los Panthers?", "es"),
    ("كم عدد النقاط التي تنازل عنها دفاع الفهود؟", "ar"),
    ("有多少名黑豹队防守球员入选了职业碗？", "zh"),
    ("Сколько очков пропустила защита Пантер?", "ru"),
])
def test_detects_the_six_languages(detector, text, lang):
    found = detector.detect(text)
    assert found.lang == lang and found.detected and 0 < found.probability <= 1


def test_han_only_text_is_chinese_not_korean(detector):
    # langdetect alone calls this Korean; without Hangul it cannot be
    assert detector.detect("卢克·坎克利贡献了多少次擒抱？").lang == "zh"
    assert detector.detect("아이폰은 언제 출시되었나요?").lang == "ko"
    assert detector.detect("日本の首都はどこですか").lang == "ja"


def test_nothing_to_detect(detector):
    assert detector.detect("").lang is None
    assert detector.detect("12345 ?!").lang is None


def test_detection_is_deterministic(detector):
    text = "Qual è la capitale"
    assert len({LanguageDetector().detect(text) for _ in range(3)} | {detector.detect(text)}) == 1


def test_resolve_prefers_the_given_language(detector):
    query, how = resolve_language(Query("q", "Wie viele Punkte?", lang="EN"), detector)
    assert query.lang == "en" and how.detected is False
    query, how = resolve_language(Query("q", "Wie viele Punkte gab die Verteidigung ab?"), detector)
    assert query.lang == "de" and how.detected is True
    with pytest.raises(LanguageError):
        resolve_language(Query("q", "x", lang="??"), detector)


def test_language_info_without_a_language_aware_stage():
    from pipeline.core.stage import Pipeline, Stage

    class Plain(Stage):
        def transform(self, queries, candidates=None):
            return {q.query_id: [] for q in queries}

    assert language_info(Pipeline([Plain()]), Query("q", "text")) is None
    assert language_info(Plain(), Query("q", "text")) is None


def test_split_by_article_is_disjoint_and_fixed():
    from training.language_modules.xquad import split_articles

    articles = [str(i) for i in range(48)]
    train, heldout = split_articles(articles)
    assert len(heldout) == 16 and not train & heldout and train | heldout == set(articles)
    assert split_articles(articles) == (train, heldout)
    assert split_articles(articles, seed=1) != (train, heldout)


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "de", "es", "ar", "zh", "ru"])
def test_detection_accuracy_on_xquad_questions(detector, lang):
    """Measured 2026-11-28: en 0.984, de 0.974, es 0.961, ar 1.000, zh 0.969, ru 0.974 (1,190 questions each)."""
    from conftest import needs_data

    from pipeline.core.language import detection_accuracy
    from pipeline.storage.collection import load_queries

    dataset = needs_data(f"xquad-r/{lang}")
    texts = [q.text for q in load_queries(dataset).values()]
    assert detection_accuracy(detector, texts, lang) >= 0.95
