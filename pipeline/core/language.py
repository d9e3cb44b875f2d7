"""Query language: an explicit ``lang`` wins, otherwise a packaged detector (langdetect) guesses.

langdetect is seeded (deterministic) and loaded once per process. Its Chinese codes
(``zh-cn``, ``zh-tw``) are folded into ``zh``; every code is lower-case ISO 639-1.

Example::

    detector = LanguageDetector()
    detector.detect("Wie viele Punkte gab die Verteidigung ab?")  # Detection(lang='de', ...)
    resolve_language(Query("q", "¿Quién ganó?"), detector).lang    # 'es'
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from typing import Sequence

from pipeline.core.stage import Pipeline
from pipeline.core.types import Query

_CODE = re.compile(r"^[a-z]{2,3}$")
_ALIASES = {"zh-cn": "zh", "zh-tw": "zh", "iw": "he", "jw": "jv"}
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")
_KANA = re.compile(r"[\u3040-\u30ff]")


class LanguageError(ValueError):
    """A language code is malformed (not 2-3 lower-case letters after normalisation)."""


def normalize_lang(code: str) -> str:
    """``'DE'`` -> ``'de'``, ``'zh-CN'`` -> ``'zh'``, ``'pt_BR'`` -> ``'pt'``; raises LanguageError otherwise."""
    if not isinstance(code, str):
        raise LanguageError(f"language code must be a string, got {type(code).__name__}")
    low = code.strip().lower().replace("_", "-")
    low = _ALIASES.get(low, low.split("-")[0])
    if not _CODE.match(low):
        raise LanguageError(f"invalid language code {code!r}: expected ISO 639-1 such as 'en', 'de', 'zh'")
    return low


@dataclass(frozen=True, slots=True)
class Detection:
    """The language of one text: ``lang`` (ISO 639-1 or None), its probability, and whether it was guessed."""

    lang: str | None
    probability: float
    detected: bool


class LanguageDetector:
    """langdetect with a fixed seed; thread-safe (each call builds its own detector object)."""

    def __init__(self, seed: int = 0, min_probability: float = 0.0):
        try:
            from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("language detection needs langdetect: pip install '.[multilingual]'") from exc
        self._factory = DetectorFactory()
        self._factory.load_profile(PROFILES_DIRECTORY)
        self._factory.set_seed(seed)
        self._lock = threading.Lock()
        self.min_probability = min_probability

    def detect(self, text: str) -> Detection:
        """Most probable language of ``text``; ``lang=None`` when nothing can be said (empty, digits only)."""
        from langdetect.lang_detect_exception import LangDetectException

        with self._lock:  # the factory's seeded generator is shared state
            detector = self._factory.create()
        detector.append(text)
        try:
            best = detector.get_probabilities()[0]
        except (LangDetectException, IndexError):
            return Detection(None, 0.0, True)
        if best.prob < self.min_probability:
            return Detection(None, float(best.prob), True)
        return Detection(_fix_han_script(text, normalize_lang(best.lang)), float(best.prob), True)


def _fix_han_script(text: str, lang: str) -> str:
    """Short Chinese questions are often guessed as Korean or Japanese: without Hangul or kana they are Chinese."""
    if lang in {"ko", "ja"} and _HAN.search(text):
        if (lang == "ko" and not _HANGUL.search(text)) or (lang == "ja" and not _KANA.search(text)):
            return "zh"
    return lang


def resolve_language(query: Query, detector: LanguageDetector | None) -> tuple[Query, Detection]:
    """The query with ``lang`` set (normalised, or detected when absent) and how it was obtained."""
    if query.lang:
        lang = normalize_lang(query.lang)
        return replace(query, lang=lang), Detection(lang, 1.0, False)
    if detector is None:
        return query, Detection(None, 0.0, False)
    found = detector.detect(query.text)
    return replace(query, lang=found.lang), found


def detection_accuracy(detector: LanguageDetector, texts: Sequence[str], lang: str) -> float:
    """Share of ``texts`` detected as ``lang`` (used to report the detector's accuracy per language)."""
    if not texts:
        raise ValueError("no texts to measure")
    return sum(detector.detect(t).lang == lang for t in texts) / len(texts)


def language_info(pipeline, query: Query) -> dict | None:
    """What the first language-aware stage of ``pipeline`` (see ``Stage.language_choice``) does with ``query``.

    None when no stage is language-aware. Raises LanguageError for a malformed ``query.lang``,
    so callers can answer 400 before running anything.
    """
    stages = pipeline.stages if isinstance(pipeline, Pipeline) else [pipeline]
    for stage in stages:
        choice = stage.language_choice(query)
        if choice is not None:
            return choice
    return None
