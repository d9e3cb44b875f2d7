"""Pretraining pairs from a bare corpus (no qrels), after Chang et al., "Pre-training Tasks for
Embedding-based Large-scale Retrieval" (ICLR 2020).

- **Inverse Cloze Task (ICT)**: a sentence of a passage is the query, the rest of the passage
  (with the title) the positive. As in Lee et al., the sentence stays in its context with a
  small probability so the model also learns lexical matching.
- **Body First Selection (BFS)**: a sentence of the document's first section is the query, a
  passage from elsewhere in the same document the positive. Abstract-length documents are cut
  into passages of a few sentences: the first passage plays the first section.

Example::

    docs = list(iter_corpus(Path("../shared/data/scifact")))
    pairs = ict_examples(docs, random.Random(13), per_doc=2)
"""

from __future__ import annotations

import random
import re
from typing import Iterable, Sequence

from pipeline.core.types import Document
from pipeline.scorers.passages import passage_text
from training.dense.examples import Example

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Za-z0-9])")


def split_sentences(text: str, min_words: int = 3) -> list[str]:
    """Sentences of a text (split after . ! ? followed by a space); fragments under ``min_words`` join the previous one."""
    out: list[str] = []
    for part in _SENTENCE_END.split(text.strip()):
        part = part.strip()
        if not part:
            continue
        if out and len(part.split()) < min_words:
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


def document_sentences(doc: Document) -> list[str]:
    """Body sentences, without a leading copy of the title (Cranfield repeats it)."""
    sentences = split_sentences(doc.text)
    if sentences and doc.title and sentences[0].strip(" .").lower() == doc.title.strip(" .").lower():
        sentences = sentences[1:]
    return sentences


def passages(sentences: Sequence[str], per_passage: int) -> list[list[str]]:
    """Consecutive chunks of ``per_passage`` sentences (a short tail joins the previous chunk)."""
    chunks = [list(sentences[i : i + per_passage]) for i in range(0, len(sentences), per_passage)]
    if len(chunks) > 1 and len(chunks[-1]) < max(1, per_passage // 2):
        chunks[-2].extend(chunks.pop())
    return chunks


def with_title(title: str, body: str) -> str:
    return passage_text(Document("", title, body))


def ict_examples(docs: Iterable[Document], rng: random.Random, per_doc: int = 1, keep_prob: float = 0.1,
                 min_sentences: int = 2, domain: str | None = None) -> list[Example]:
    """ICT pairs: (sentence, title + the rest of its document), ``per_doc`` distinct sentences per document."""
    out = []
    for doc in docs:
        sentences = document_sentences(doc)
        if len(sentences) < min_sentences:
            continue
        for i in rng.sample(range(len(sentences)), min(per_doc, len(sentences))):
            context = sentences if rng.random() < keep_prob else sentences[:i] + sentences[i + 1 :]
            out.append(Example(sentences[i], with_title(doc.title, " ".join(context)), group=doc.doc_id,
                               domain=domain, meta={"task": "ict"}))
    return out


def bfs_examples(docs: Iterable[Document], rng: random.Random, per_doc: int = 1, per_passage: int = 3,
                 domain: str | None = None) -> list[Example]:
    """BFS pairs: (a sentence of the first passage, title + another passage of the same document)."""
    out = []
    for doc in docs:
        chunks = passages(document_sentences(doc), per_passage)
        if len(chunks) < 2:
            continue
        for _ in range(per_doc):
            query = rng.choice(chunks[0])
            positive = rng.choice(chunks[1:])
            out.append(Example(query, with_title(doc.title, " ".join(positive)), group=doc.doc_id,
                               domain=domain, meta={"task": "bfs"}))
    return out


TASKS = {"ict": ict_examples, "bfs": bfs_examples}


def pretraining_examples(tasks: Sequence[str], docs: Sequence[Document], rng: random.Random, per_doc: int = 1,
                         domain: str | None = None) -> list[Example]:
    """The union of the named tasks' pairs (``["ict", "bfs"]`` mixes both)."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown pretraining task(s) {unknown} (known: {sorted(TASKS)})")
    out: list[Example] = []
    for task in tasks:
        out.extend(TASKS[task](docs, rng, per_doc=per_doc, domain=domain))
    return out
