"""TREC run files: write and read ``qid Q0 docid rank score tag``."""

from __future__ import annotations

from pathlib import Path

from pipeline.types import Hit, Results


def write_run(results: Results, path: Path, tag: str = "run") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for qid in sorted(results):
            for rank, hit in enumerate(results[qid], 1):
                f.write(f"{qid} Q0 {hit.doc_id} {rank} {hit.score:.6f} {tag}\n")
    tmp.replace(path)


def read_run(path: Path) -> Results:
    results: Results = {}
    with Path(path).open() as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{lineno}: expected 6 columns 'qid Q0 docid rank score tag'")
            qid, _, doc_id, _, score, _ = parts
            results.setdefault(qid, []).append(Hit(qid, doc_id, float(score)))
    for qid in results:
        results[qid].sort(key=lambda h: (-h.score, h.doc_id))
    return results
