"""Query-aware passage windows (issue 23): the title and the run of words that covers the most query terms."""

from __future__ import annotations

from types import SimpleNamespace

from eval.passage_window import query_window
from pipeline.core.types import Document, Query


def test_a_text_that_fits_comes_back_whole():
    assert query_window("heat transfer", "Title", " short text here ", 50) == "Title short text here"
    assert query_window("heat transfer", "", "short text", 50) == "short text"


def test_the_window_holds_the_late_words_the_query_asks_for():
    text = " ".join(["filler"] * 200 + ["heat", "transfer", "at", "the", "wall"] + ["filler"] * 200)
    got = query_window("How is heat transfer measured?", "Wall study", text, 12)
    assert got.startswith("Wall study ") and "heat transfer" in got
    assert len(got.split()) == 12


def test_without_query_terms_the_window_is_the_beginning():
    text = " ".join(f"w{i}" for i in range(100))
    assert query_window("the of and", "T", text, 11) == "T " + " ".join(f"w{i}" for i in range(10))


def test_tradeoff_windows_are_sized_for_the_token_budget():
    from eval.rerank_tradeoff import WORDS_PER_TOKEN, windowed_texts

    class Docs:
        def get_many(self, ids):
            return {i: Document(i, "A title", " ".join(["word"] * 500)) for i in ids if i != "gone"}

    stage = SimpleNamespace(passages=SimpleNamespace(docs=Docs()))
    texts = windowed_texts(stage, Query("q", "two words"), ["d1", "gone"], 128)
    assert len(texts["d1"].split()) == int(128 * WORDS_PER_TOKEN) - 2 and texts["gone"] == ""
