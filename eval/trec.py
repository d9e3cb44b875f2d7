"""TREC run files: write and read ``qid Q0 docid rank score tag``."""

from __future__ import annotations

import math
from pathlib import Path

from eval.formats import FormatError
from pipeline.core.types import Hit, Results


def write_run(results: Results, path: Path, tag: str = "run") -> None:
    """Write a run file atomically (a reader never sees half a file); ``tag`` has no whitespace."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be non-empty without whitespace, got {tag!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for qid in sorted(results):
            for rank, hit in enumerate(results[qid], 1):
                f.write(f"{qid} Q0 {hit.doc_id} {rank} {hit.score:.6f} {tag}\n")
    tmp.replace(path)


def read_run(path: Path) -> Results:
    """``qid -> hits`` sorted by descending score; raises FormatError naming the bad line."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"no such run file: {path}")
    results: Results = {}
    seen: set[tuple[str, str]] = set()
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise FormatError(f"{path}:{lineno}: expected 6 columns 'qid Q0 docid rank score tag'")
            qid, _, doc_id, _, raw_score, _ = parts
            try:
                score = float(raw_score)
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise FormatError(f"{path}:{lineno}: score {raw_score!r} is not a finite number")
            if (qid, doc_id) in seen:
                raise FormatError(f"{path}:{lineno}: document {doc_id!r} appears twice for query {qid!r}")
            seen.add((qid, doc_id))
            results.setdefault(qid, []).append(Hit(qid, doc_id, score))
    for qid in results:
        results[qid].sort(key=lambda h: (-h.score, h.doc_id))
    return results


def run_tag(path: Path) -> str | None:
    """The tag of the first line of a run file (None for an empty file)."""
    with Path(path).open() as f:
        for line in f:
            parts = line.split()
            if len(parts) == 6:
                return parts[5]
    return None
