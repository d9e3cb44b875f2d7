"""Snippets and analyzer-aware highlights for the search page (``POST /search`` with ``highlight: true``).

A word of a hit matches when the collection's Lucene analyzer (the one BM25 searched with:
lowercasing, stop words, Porter stemming for English) maps it to a term of the analyzed query,
so "cell" marks "cells" and "Cellular" no more than BM25 matched it. Without Lucene (no JVM),
words match after lowercasing. The snippet is the window of ``width`` characters holding the
most matches, cut at word boundaries.

Example::

    hl = Highlighter(lucene_analyzer("en"))
    snippet, spans = hl.snippet("Cells divide ...", hl.query_terms("cell division"))
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Callable

from pipeline.runtime.java import JVM_CALLS

logger = logging.getLogger(__name__)

WORD = re.compile(r"\w+", re.UNICODE)
SNIPPET_CHARS = 320


def lowercase(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


@functools.lru_cache(maxsize=8)
def lucene_analyzer(language: str) -> Callable[[str], list[str]]:
    """Pyserini's analyzer for ``language`` (needs the JVM that BM25 starts); lowercase words if unavailable."""
    try:
        from pyserini.analysis import Analyzer, get_lucene_analyzer

        with JVM_CALLS:
            analyzer = Analyzer(get_lucene_analyzer(language=language))
            analyzer.analyze("test")
    except Exception as exc:  # noqa: BLE001 - highlighting degrades to exact words, the search still works
        logger.warning("no Lucene analyzer for %r (%s): highlighting exact words", language, exc)
        return lowercase

    def analyze(text: str) -> list[str]:
        with JVM_CALLS:  # pyjnius binds methods through shared state: one Java call at a time
            return analyzer.analyze(text)

    return analyze


class Highlighter:
    """Marks the words of a text whose analyzed form is a term of the analyzed query."""

    def __init__(self, analyze: Callable[[str], list[str]] = lowercase):
        self.analyze = analyze
        self._terms: dict[str, tuple[str, ...]] = {}

    def word_terms(self, word: str) -> tuple[str, ...]:
        key = word.lower()
        if key not in self._terms:
            self._terms[key] = tuple(self.analyze(word))
        return self._terms[key]

    def query_terms(self, query: str) -> set[str]:
        return set(self.analyze(query))

    def spans(self, text: str, terms: set[str]) -> list[tuple[int, int]]:
        """``(start, end)`` character offsets of the matching words of ``text``."""
        if not terms:
            return []
        return [(m.start(), m.end()) for m in WORD.finditer(text) if terms.intersection(self.word_terms(m.group()))]

    def snippet(self, text: str, terms: set[str], width: int = SNIPPET_CHARS) -> tuple[str, list[tuple[int, int]]]:
        """The ``width``-character window with the most matches (``…`` where cut) and the match offsets in it."""
        spans = self.spans(text, terms)
        if len(text) <= width:
            return text, spans
        start = best_window(spans, width)
        start = _word_start(text, start)
        end = _word_end(text, min(len(text), start + width))
        prefix, suffix = ("…" if start > 0 else ""), ("…" if end < len(text) else "")
        shift = len(prefix) - start
        inside = [(s + shift, e + shift) for s, e in spans if s >= start and e <= end]
        return prefix + text[start:end] + suffix, inside


def best_window(spans: list[tuple[int, int]], width: int) -> int:
    """Start of a window of ``width`` characters covering the most spans (a little context before the first)."""
    if not spans:
        return 0
    best, best_count, j = spans[0][0], 0, 0
    for i, (s, _) in enumerate(spans):
        j = max(j, i)
        while j + 1 < len(spans) and spans[j + 1][1] - s <= width:
            j += 1
        if j - i + 1 > best_count:
            best, best_count = s, j - i + 1
    return max(0, best - width // 6)


def _word_start(text: str, i: int) -> int:
    if i <= 0:
        return 0
    space = text.rfind(" ", 0, i)
    return space + 1 if i - space < 30 else i  # space -1: the text's first word


def _word_end(text: str, i: int) -> int:
    if i >= len(text):
        return len(text)
    space = text.find(" ", i)
    return space if 0 <= space and space - i < 30 else i


def pipeline_language(pipeline, default: str = "en") -> str:
    """The analyzer language of the first BM25 stage of a pipeline (fusion retrievers included)."""
    todo = list(getattr(pipeline, "stages", []))
    while todo:
        stage = todo.pop(0)
        language = getattr(stage, "language", None)
        if isinstance(language, str):
            return language
        todo.extend(getattr(stage, "retrievers", []) or [])
    return default


def add_highlights(hits: list, query: str, analyze: Callable[[str], list[str]]) -> None:
    """Fill ``snippet``, ``highlights`` and ``title_highlights`` of each :class:`~service.schemas.SearchHit`."""
    highlighter = Highlighter(analyze)
    terms = highlighter.query_terms(query)
    for hit in hits:
        hit.snippet, spans = highlighter.snippet(hit.text, terms)
        hit.highlights = [list(s) for s in spans]
        hit.title_highlights = [list(s) for s in highlighter.spans(hit.title, terms)]
