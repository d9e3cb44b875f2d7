"""Pseudo-queries from a bare corpus: a BEIR dataset with a ``train`` split and no human labels.

``title`` pseudo-queries (the cheap InPars / GPL-style signal that needs no generator): each
document's title becomes a query whose one relevant document is the same document *without* its
title. The new dataset's corpus is title-less (a title repeated at the start of the text, as in
Cranfield, is stripped too), so BM25 cannot match a query to its source by copying, and the
reranker has to learn that a summary phrase and a passage that explains it belong together.
Titles that are too short, too long or that the body repeats verbatim are skipped.

``sentence`` pseudo-queries (the inverse cloze task of Lee et al., 2019): one sentence drawn from a
document's body becomes the query, and the relevant document is the rest of that document (title
kept, the sentence removed), so the reranker must recognise the context a statement belongs to rather
than a copy of it. They read like questions and claims (Cranfield's and SciFact's queries are whole
sentences), where titles read like keyword lists; they need no title at all.

The written folder is an ordinary BEIR dataset (``corpus.jsonl``, ``queries.jsonl``,
``qrels/train.tsv``), so the usual ``mine`` command turns it into a training bundle::

    python -m training cross-encoder pseudo --dataset ../shared/data/scifact --out .cache/pseudo/scifact-titles
    python -m training cross-encoder mine --dataset .cache/pseudo/scifact-titles --eval-split '' \\
        --dev-queries 50 --depth 100 --out .cache/ce/scifact-titles
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from pathlib import Path

from pipeline.storage.collection import iter_corpus

logger = logging.getLogger(__name__)

MIN_TITLE_WORDS, MAX_TITLE_WORDS, MIN_BODY_WORDS = 3, 24, 20


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def strip_title(title: str, text: str) -> str:
    """``text`` without a leading copy of ``title`` (compared word by word, punctuation ignored)."""
    t = _words(title)
    if not t:
        return text.strip()
    tokens = re.finditer(r"\w+", text)
    matched = 0
    end = 0
    for m in tokens:
        if matched == len(t) or m.group(0).lower() != t[matched]:
            break
        matched, end = matched + 1, m.end()
    if matched < len(t):
        return text.strip()
    return text[end:].lstrip(" .:;,-\u2013\u2014").strip()


def title_pairs(docs, limit: int | None = None, seed: int = 13) -> list[tuple[str, str, str]]:
    """``(doc_id, query, body)`` for documents whose title makes a usable query; a seeded sample of ``limit``."""
    pairs = []
    for doc in docs:
        title, body = doc.title.strip(), strip_title(doc.title, doc.text)
        n = len(_words(title))
        if not MIN_TITLE_WORDS <= n <= MAX_TITLE_WORDS or len(_words(body)) < MIN_BODY_WORDS:
            continue
        if " ".join(_words(title)) in " ".join(_words(body)):  # the body quotes its title: a copy task
            continue
        pairs.append((doc.doc_id, title.rstrip(" ."), body))
    pairs.sort()
    random.Random(seed).shuffle(pairs)
    return pairs[:limit] if limit else pairs


MIN_SENTENCE_WORDS, MAX_SENTENCE_WORDS, MIN_REST_WORDS = 6, 40, 25
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
_SENTENCE_END_CASELESS = re.compile(r"(?<=[.!?])\s+(?=\S)")  # all-lowercase corpora (Cranfield: "... flow . the ...")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``; a capital letter must start the next one unless the text has none at all."""
    text = text.strip()
    pattern = _SENTENCE_END if any(c.isupper() for c in text) else _SENTENCE_END_CASELESS
    return [s.strip() for s in pattern.split(text) if s.strip()]


def sentence_pairs(docs, limit: int | None = None, seed: int = 13) -> list[tuple[str, str, str]]:
    """``(doc_id, query, rest)``: one seeded sentence of each document's body as the query, the
    document without that sentence (title kept, on its first line) as its passage."""
    rng = random.Random(seed)
    docs = sorted(docs, key=lambda d: d.doc_id)
    split = {d.doc_id: split_sentences(d.text) for d in docs}
    # boilerplate ("This package contains the debugging symbols") names no one document: such a query has
    # many right answers and one label, so sentences found in more than one document are never drawn
    seen = Counter(" ".join(_words(s)) for sentences in split.values() for s in set(sentences))
    pairs = []
    for doc in docs:
        sentences = split[doc.doc_id]
        usable = [i for i, s in enumerate(sentences)
                  if MIN_SENTENCE_WORDS <= len(_words(s)) <= MAX_SENTENCE_WORDS and seen[" ".join(_words(s))] == 1]
        if len(sentences) < 3 or not usable:
            continue
        i = rng.choice(usable)
        rest = " ".join(sentences[:i] + sentences[i + 1:])
        if len(_words(rest)) < MIN_REST_WORDS:
            continue
        pairs.append((doc.doc_id, sentences[i].rstrip(" ."), rest))
    rng.shuffle(pairs)
    return pairs[:limit] if limit else pairs


KINDS = {"title": title_pairs, "sentence": sentence_pairs}


def write_title_dataset(dataset: Path, out: Path, limit: int | None = None, seed: int = 13) -> dict:
    """Write the title pseudo-query dataset of ``dataset`` into ``out`` (see :func:`write_pseudo_dataset`)."""
    return write_pseudo_dataset(dataset, out, "title", limit, seed)


def write_pseudo_dataset(dataset: Path, out: Path, kind: str = "title", limit: int | None = None, seed: int = 13) -> dict:
    """Write the ``kind`` pseudo-query dataset of ``dataset`` into ``out``; returns counts for the log/card.

    Every document stays in the corpus (title-less for ``title``, without the drawn sentence for
    ``sentence``), so negatives come from the whole collection; only ``limit`` of them get a query.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown pseudo-query kind {kind!r}; choose one of {sorted(KINDS)}")
    dataset, out = Path(dataset), Path(out)
    docs = list(iter_corpus(dataset))
    if not docs:
        raise ValueError(f"{dataset} has an empty corpus")
    pairs = KINDS[kind](docs, limit, seed)
    if not pairs:
        raise ValueError(f"no document of {dataset} gives a usable {kind} pseudo-query (titles: "
                         f"{MIN_TITLE_WORDS}-{MAX_TITLE_WORDS} words, a body of >= {MIN_BODY_WORDS} words; "
                         f"sentences: {MIN_SENTENCE_WORDS}-{MAX_SENTENCE_WORDS} words in a body of >= 3)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    bodies = {d: b for d, _, b in pairs}
    if kind == "title":
        rows = ({"_id": d.doc_id, "title": "", "text": bodies.get(d.doc_id) or strip_title(d.title, d.text)} for d in docs)
    else:
        rows = ({"_id": d.doc_id, "title": d.title, "text": bodies.get(d.doc_id, d.text)} for d in docs)
    prefix = kind[0]
    _write_lines(out / "corpus.jsonl", (json.dumps(r, ensure_ascii=False) for r in rows))
    _write_lines(out / "queries.jsonl", (json.dumps({"_id": f"{prefix}-{d}", "text": q}, ensure_ascii=False)
                                         for d, q, _ in pairs))
    _write_lines(out / "qrels" / "train.tsv",
                 ["query-id\tcorpus-id\tscore", *(f"{prefix}-{d}\t{d}\t1" for d, _, _ in pairs)])
    info = {"source": str(dataset.name), "kind": kind, "documents": len(docs), "queries": len(pairs), "seed": seed}
    (out / "pseudo.json").write_text(json.dumps(info, indent=2))
    logger.info("%s pseudo-queries of %s: %d queries over %d documents -> %s", kind, dataset, len(pairs), len(docs), out)
    return info


def _write_lines(path: Path, lines) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    tmp.replace(path)
