"""MS MARCO / TREC formats: tsv collections and queries, TREC topics and qrels.

Reading (every reader raises :class:`FormatError` naming ``file:line`` on bad input):

- ``read_qrels(path)``: TREC qrels (``qid iter docid rel``) or BEIR qrels tsv
  (``query-id<TAB>corpus-id<TAB>score`` with a header), detected from the content;
- ``read_topics(path)``: TREC topics (``<top><num>...<title>...``) or an MS MARCO
  queries tsv (``qid<TAB>text``);
- ``iter_tsv_collection(path)``: ``docid<TAB>text`` or ``docid<TAB>title<TAB>text``.

``convert_to_beir`` turns such files into a BEIR folder that the indexer and the
eval job read; ``load_judgements`` gives topics and qrels from either layout::

    convert_to_beir(Path("collection.tsv"), Path("topics.txt"), Path("qrels.txt"), Path("msmarco-beir"), split="dev")
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline.core.errors import CollectionError
from pipeline.core.types import Document
from pipeline.storage.collection import load_qrels, load_queries


class FormatError(CollectionError, ValueError):
    """A run, qrels, topics or collection file does not follow its format."""


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"no such file: {path}")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield lineno, line


def _relevance(value: str, where: str) -> int:
    try:
        return int(float(value))
    except ValueError as exc:
        raise FormatError(f"{where}: relevance {value!r} is not a number") from exc


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``qid -> {docid: relevance}`` from a TREC qrels file or a BEIR qrels tsv."""
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        if "\t" in line and line.count("\t") == 2:  # BEIR: query-id, corpus-id, score
            parts = line.split("\t")
            if parts[0] == "query-id":
                continue
            qid, doc_id, rel = parts
        else:
            parts = line.split()
            if len(parts) != 4:
                raise FormatError(f"{where}: expected 4 columns 'qid iter docid relevance', got {len(parts)}")
            qid, _, doc_id, rel = parts
        qrels.setdefault(qid, {})[doc_id] = _relevance(rel, where)
    if not qrels:
        raise FormatError(f"{path}: no judgements")
    return qrels


def write_trec_qrels(qrels: dict[str, dict[str, int]], path: Path) -> None:
    """Write ``qid 0 docid relevance`` lines, queries and documents sorted."""
    with Path(path).open("w", encoding="utf-8") as f:
        for qid in sorted(qrels):
            for doc_id in sorted(qrels[qid]):
                f.write(f"{qid} 0 {doc_id} {qrels[qid][doc_id]}\n")


_TOP = re.compile(r"<top>(.*?)</top>", re.S | re.I)
_NUM = re.compile(r"<num>\s*(?:Number:)?\s*(\S+)", re.I)
_FIELD = r"<{tag}>\s*(?:{label}:)?(.*?)(?=<(?:title|desc|narr|/top)>|$)"
_LABELS = {"title": "Topic", "desc": "Description", "narr": "Narrative"}


def read_topics(path: Path, field: str = "title") -> dict[str, str]:
    """``qid -> text`` from TREC topics (``field``: title, desc or narr) or a ``qid<TAB>text`` tsv."""
    path = Path(path)
    if field not in _LABELS:
        raise ValueError(f"field must be one of {sorted(_LABELS)}, got {field!r}")
    first = next(_lines(path), (0, ""))[1]
    if first.lstrip().lower().startswith("<top>"):
        return _read_sgml_topics(path, field)
    topics: dict[str, str] = {}
    for lineno, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip():
            raise FormatError(f"{path}:{lineno}: expected 'qid<TAB>query text'")
        if parts[0] in topics:
            raise FormatError(f"{path}:{lineno}: duplicate query id {parts[0]!r}")
        topics[parts[0]] = parts[1].strip()
    if not topics:
        raise FormatError(f"{path}: no topics")
    return topics


def _read_sgml_topics(path: Path, field: str) -> dict[str, str]:
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(_FIELD.format(tag=field, label=_LABELS[field]), re.S | re.I)
    topics: dict[str, str] = {}
    for i, block in enumerate(_TOP.findall(text), 1):
        num, body = _NUM.search(block), pattern.search(block)
        if not num or not body or not body.group(1).strip():
            raise FormatError(f"{path}: topic #{i} has no <num> or no <{field}>")
        topics[num.group(1)] = " ".join(body.group(1).split())
    if not topics:
        raise FormatError(f"{path}: no <top> blocks")
    return topics


def iter_tsv_collection(path: Path) -> Iterator[Document]:
    """Documents of ``docid<TAB>text`` or ``docid<TAB>title<TAB>text`` lines (ids unique)."""
    seen: set[str] = set()
    for lineno, line in _lines(path):
        parts = line.split("\t")
        if len(parts) == 2:
            doc_id, title, body = parts[0], "", parts[1]
        elif len(parts) == 3:
            doc_id, title, body = parts
        else:
            raise FormatError(f"{path}:{lineno}: expected 'docid<TAB>text' or 'docid<TAB>title<TAB>text'")
        if not doc_id or doc_id in seen:
            raise FormatError(f"{path}:{lineno}: empty or duplicate document id {doc_id!r}")
        seen.add(doc_id)
        yield Document(doc_id, title, body)
    if not seen:
        raise FormatError(f"{path}: the collection is empty")


def convert_to_beir(collection: Path, topics: Path, qrels: Path, out: Path, split: str = "test", field: str = "title") -> Path:
    """Write a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) from tsv/TREC files.

    The folder appears complete or not at all (written next to ``out``, then renamed);
    an existing ``out`` is refused rather than overwritten.
    """
    out = Path(out)
    if out.exists():
        raise FormatError(f"{out} exists: choose a new folder (nothing was written)")
    queries, judged = read_topics(topics, field), read_qrels(qrels)
    unknown = [q for q in judged if q not in queries]
    if unknown:
        raise FormatError(f"{len(unknown)} judged queries are not in {topics}, e.g. {unknown[:3]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with (tmp / "corpus.jsonl").open("w", encoding="utf-8") as f:
            for doc in iter_tsv_collection(collection):
                f.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}, ensure_ascii=False) + "\n")
        with (tmp / "queries.jsonl").open("w", encoding="utf-8") as f:
            for qid, text in queries.items():
                f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
        (tmp / "qrels").mkdir()
        with (tmp / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid in judged:
                for doc_id, rel in judged[qid].items():
                    f.write(f"{qid}\t{doc_id}\t{rel}\n")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_judgements(source: Path, split: str = "test") -> tuple[dict[str, dict[str, int]], dict[str, str] | None]:
    """``(qrels, topics or None)`` from a BEIR folder (``split`` picks the qrels) or a qrels file."""
    source = Path(source)
    if source.is_dir():
        qrels = load_qrels(source, split)
        topics = None
        if (source / "queries.jsonl").is_file():
            topics = {qid: q.text for qid, q in load_queries(source).items()}
        return qrels, topics
    return read_qrels(source), None
