"""Snippets and analyzer-aware highlighting: the words BM25 matched are the words marked."""

from __future__ import annotations

from service.highlight import Highlighter, best_window


def test_snippet_is_the_window_with_most_matches_cut_at_words():
    h = Highlighter()
    text = "volcano " + "filler " * 100 + "ocean tides and ocean waves " + "filler " * 100
    snippet, spans = h.snippet(text, {"ocean", "tides"}, width=80)
    assert snippet.startswith("…") and snippet.endswith("…") and len(snippet) <= 80 + 2 + 60
    assert [snippet[s:e] for s, e in spans] == ["ocean", "tides", "ocean"]
    assert " fill…" not in snippet and "…filler" in snippet  # whole words


def test_short_text_is_kept_whole_and_no_terms_no_marks():
    h = Highlighter()
    assert h.snippet("Ocean tides.", {"tides"}) == ("Ocean tides.", [(6, 11)])
    assert h.snippet("Ocean tides.", set()) == ("Ocean tides.", [])
    assert best_window([], 50) == 0


def test_search_highlights_what_the_analyzer_matches(client):
    body = client.post("/search", json={"query": "tide", "k": 3, "highlight": True}).json()
    top = body["hits"][0]
    assert top["title"] == "Tides" and top["title_highlights"] == [[0, 5]]  # "tide" (stemmed) marks "Tides"
    marked = {top["snippet"][s:e].lower() for s, e in top["highlights"]}
    assert marked and marked <= {"tide", "tides"}
    plain = client.post("/search", json={"query": "tide", "k": 3}).json()["hits"][0]
    assert "snippet" not in plain and "highlights" not in plain


def test_snippet_never_starts_inside_the_first_word():
    text = "separation tides " + "y " * 200  # the window would start at character 1
    snippet, _ = Highlighter().snippet(text, {"tides"}, width=60)
    assert snippet.startswith("separation")
