"""Hash sharding of a collection: which shard a document belongs to, and parsing corpus lines.

A document's shard is ``crc32(doc_id) % num_shards``: stable across runs and
machines, so a rebuild puts every document in the same shard, and two copies of
one id always meet in the same shard (duplicate ids are caught per shard).

Example::

    >>> shard_of("4983", 4)
    0
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.core.errors import CollectionError

SHARDS_DIR = "shards"


def shard_of(doc_id: str, num_shards: int) -> int:
    """The shard (``0 .. num_shards-1``) that holds ``doc_id``."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return zlib.crc32(doc_id.encode("utf-8")) % num_shards


def shard_name(shard: int) -> str:
    return f"shard-{shard:04d}"


def shard_dir(root: Path, shard: int) -> Path:
    """Where shard ``shard`` of a build lives inside the build folder ``root``."""
    return Path(root) / SHARDS_DIR / shard_name(shard)


def parse_corpus_lines(lines: Sequence[str], num_shards: int) -> dict[str, np.ndarray]:
    """BEIR/JSONL corpus lines -> columns ``doc_id, title, text, shard`` (a Ray Data batch).

    Accepts ``_id`` or ``id`` and ``text`` or ``contents`` like :func:`pipeline.storage.collection.iter_corpus`;
    raises :class:`CollectionError` on a line that is not JSON or has no id.
    """
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            row: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CollectionError(f"corpus line is not JSON ({exc.msg}): {line[:80]!r}") from exc
        doc_id = row.get("_id", row.get("id"))
        if doc_id is None or str(doc_id) == "":
            raise CollectionError(f"document without '_id' (or 'id'): {line[:80]!r}")
        ids.append(str(doc_id))
        titles.append(str(row.get("title") or ""))
        texts.append(str(row.get("text", row.get("contents", "")) or ""))
    return {
        "doc_id": np.array(ids, dtype=object),
        "title": np.array(titles, dtype=object),
        "text": np.array(texts, dtype=object),
        "shard": np.array([shard_of(i, num_shards) for i in ids], dtype=np.int64),
    }


def check_unique(doc_ids: Sequence[str], where: str) -> None:
    """Raise CollectionError naming the first duplicated id (hash sharding makes this check complete per shard)."""
    seen: set[str] = set()
    for doc_id in doc_ids:
        if doc_id in seen:
            raise CollectionError(f"duplicate document id {doc_id!r} ({where})")
        seen.add(doc_id)
