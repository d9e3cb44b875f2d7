"""What a reranker reads of a document: THE one ``passage_text`` and a lookup of passages by id.

Every indexer, trainer and stage builds a document's passage with :func:`passage_text`, so that
training and serving see the same text by construction rather than by copying a format string.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

from pipeline.core.types import Document


def passage_text(doc: Document, title_separator: str = " ") -> str:
    """``title + separator + text`` (BEIR's flat convention), or the text alone for an untitled document.

    >>> passage_text(Document("d1", "BM25", "is a ranking function."))
    'BM25 is a ranking function.'
    >>> passage_text(Document("d2", "", " no title "))
    ' no title '
    """
    if not doc.title:
        return doc.text
    return f"{doc.title}{title_separator}{doc.text}".strip()


def listwise_passage(doc: Document) -> str:
    """The passage as the listwise prompt shows it: ``"Title. text"``, whitespace collapsed (FIRST's training data)."""
    return " ".join(passage_text(doc, ". ").split())


class DocumentSource(Protocol):
    """Where documents come from: a :class:`~pipeline.storage.docstore.DocStore` or an in-memory mapping."""

    def get_many(self, doc_ids: Sequence[str]) -> Mapping[str, Document]: ...


class Passages:
    """Passage texts by document id, read from a :class:`DocumentSource`; a missing document reads as ``""``.

    ``title_separator`` joins title and text (the listwise prompt shows ``"Title. text"``);
    ``titles=False`` keeps the text alone (what the language modules were trained on);
    ``collapse_whitespace`` joins words with single spaces (the listwise prompt).

    Example::

        passages = Passages(docstore)
        passages.texts(["d1", "d2"])   # {"d1": "Title text...", "d2": "..."}
    """

    def __init__(self, docs: DocumentSource, title_separator: str = " ", titles: bool = True,
                 collapse_whitespace: bool = False):
        self.docs, self.title_separator = docs, title_separator
        self.titles, self.collapse_whitespace = titles, collapse_whitespace

    def text(self, doc: Document) -> str:
        text = passage_text(doc, self.title_separator) if self.titles else doc.text
        return " ".join(text.split()) if self.collapse_whitespace else text

    def texts_of(self, docs: Sequence[Document]) -> list[str]:
        """The passages of documents at hand (a ``/rerank`` request's), in order."""
        return [self.text(d) for d in docs]

    def texts(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """``doc_id -> passage`` for every id (``""`` for an unknown id)."""
        found = self.docs.get_many(list(doc_ids)) if doc_ids else {}
        return {i: self.text(found[i]) if i in found else "" for i in doc_ids}


class InMemoryDocuments:
    """Documents held in memory (a request's documents, a test's corpus), looked up like a DocStore."""

    def __init__(self, docs: Sequence[Document]):
        self._docs = {d.doc_id: d for d in docs}

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, Document]:
        return {i: self._docs[i] for i in doc_ids if i in self._docs}
