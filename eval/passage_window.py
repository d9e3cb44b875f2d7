"""Query-aware passage windows: what a reranker reads of a long document when it may read only part of it.

A cross-encoder truncated to its first N tokens misses what a document says late; a window of N words
chosen for the query keeps the title and the run of words that holds most of the query's terms
(each distinct query term counted once per window, stop words and one-letter terms ignored). Cheap: one
sliding pass per passage, no model. (Issue 23: fewer tokens per pair on a CPU; measured by ``eval.rerank_tradeoff --window-lengths``, rejected, not served.)

>>> query_window("boundary layer transition", "Flow", "a b c the boundary layer is thin . transition occurs late", 8)
'Flow the boundary layer is thin . transition'
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")
STOP = frozenset("a an and are as at be by for from has have in is it its of on or that the to was were what which "
                 "with how why when does do can not no".split())


def query_terms(query: str) -> set[str]:
    return {w for w in _WORD.findall(query.lower()) if len(w) > 1 and w not in STOP}


def query_window(query: str, title: str, text: str, max_words: int) -> str:
    """``title`` + the ``max_words - len(title words)`` consecutive words of ``text`` that cover the most distinct
    query terms (ties: the earliest window, so a text that fits is returned whole and unchanged)."""
    words = text.split()
    budget = max(max_words - len(title.split()), 1)
    if len(words) <= budget:
        body = text.strip()
    else:
        body = " ".join(words[_best_start(query_terms(query), words, budget):][:budget])
    return f"{title} {body}".strip() if title else body


def _best_start(terms: set[str], words: list[str], budget: int) -> int:
    """Start of the first ``budget``-word window covering the most distinct ``terms`` (one sliding pass)."""
    if not terms:
        return 0
    keys = [[w for w in _WORD.findall(word.lower()) if w in terms] for word in words]
    counts: dict[str, int] = {}

    def add(i: int, step: int) -> None:
        for w in keys[i]:
            counts[w] = counts.get(w, 0) + step
            if counts[w] == 0:
                del counts[w]

    for i in range(budget):
        add(i, 1)
    best, best_start = len(counts), 0
    for start in range(1, len(words) - budget + 1):
        add(start - 1, -1)
        add(start + budget - 1, 1)
        if len(counts) > best:
            best, best_start = len(counts), start
    return best_start
