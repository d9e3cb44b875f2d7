"""Read test collections in BEIR layout (and plain JSONL corpora).

BEIR layout: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
(``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``,
``score``, header line, CRLF tolerated). A plain JSONL corpus may use ``id``
instead of ``_id`` and ``contents`` instead of ``text``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

from pipeline.core.errors import CollectionError
from pipeline.core.types import Document, Query


def corpus_path(dataset: Path) -> Path:
    """The corpus file of a dataset directory (or the file itself)."""
    dataset = Path(dataset)
    path = dataset / "corpus.jsonl" if dataset.is_dir() else dataset
    if not path.is_file():
        raise CollectionError(f"no corpus at {path}: expected a BEIR folder with corpus.jsonl or a .jsonl file")
    return path


def json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, row)`` of a JSON-lines file, blank lines skipped; a bad line is a CollectionError."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise CollectionError(f"{path}:{lineno}: not a JSON line ({exc.msg})") from exc


def iter_corpus(dataset: Path) -> Iterator[Document]:
    """Yield every document; raises CollectionError on bad lines, duplicate ids or an empty corpus."""
    path = corpus_path(dataset)
    seen: set[str] = set()
    for lineno, row in json_lines(path):
        doc_id = row.get("_id", row.get("id"))
        if doc_id is None or str(doc_id) == "":
            raise CollectionError(f"{path}:{lineno}: document without '_id' (or 'id')")
        doc_id = str(doc_id)
        if doc_id in seen:
            raise CollectionError(f"{path}:{lineno}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        text = row.get("text", row.get("contents", ""))
        yield Document(doc_id=doc_id, title=str(row.get("title") or ""), text=str(text or ""))
    if not seen:
        raise CollectionError(f"{path}: the corpus is empty")


def load_queries(dataset: Path, lang: str | None = None) -> dict[str, Query]:
    """All queries of a BEIR dataset, keyed by id."""
    path = Path(dataset) / "queries.jsonl"
    if not path.is_file():
        raise CollectionError(f"no queries file at {path}")
    queries: dict[str, Query] = {}
    for _, row in json_lines(path):
        qid = str(row["_id"])
        queries[qid] = Query(query_id=qid, text=str(row["text"]), lang=lang)
    return queries


def load_qrels(dataset: Path, split: str) -> dict[str, dict[str, int]]:
    """``query_id -> {doc_id: relevance}`` from ``qrels/<split>.tsv`` (header and CRLF tolerated)."""
    path = Path(dataset) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        available = sorted(p.stem for p in (Path(dataset) / "qrels").glob("*.tsv"))
        raise CollectionError(f"no qrels for split {split!r} at {path}; available splits: {available}")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\r\n").split("\t")
            if lineno == 1 and parts[0] == "query-id":
                continue
            if len(parts) < 3:
                if line.strip():
                    raise CollectionError(f"{path}:{lineno}: expected query-id<TAB>corpus-id<TAB>score")
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(float(parts[2]))
    return qrels


def file_checksum(path: Path, algo: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algo)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_name(dataset: Path) -> str:
    """A collection name derived from its folder, e.g. ``xquad-r/de`` -> ``xquad-r-de``."""
    dataset = Path(dataset).resolve()
    if dataset.is_file():
        return dataset.stem
    if dataset.parent.name in {"xquad-r"}:
        return f"{dataset.parent.name}-{dataset.name}"
    return dataset.name
