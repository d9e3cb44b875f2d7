"""XQuAD-R's held-out and dev questions as eval splits: ``python -m eval --split heldout`` on the real collections.

``python -m training.language_modules.split_views --data ../shared/data/xquad-r --out runs/xquad-splits/xquad-r``

The data folders have one qrels split, ``test`` (every question), and are read-only. This writes, per language,
``OUT/<lang>/`` with ``corpus.jsonl`` and ``queries.jsonl`` as links to the data and ``qrels/heldout.tsv``
(the questions of the held-out articles, :func:`~training.language_modules.xquad.question_split`) and
``qrels/dev.tsv`` (the dev questions the blend weights were chosen on,
:func:`~training.language_modules.interpolation.dev_questions`), with the same seed and share as the training
jobs. The corpus is the same file, so its indexes are the collection's own: with ``OUT`` ending in ``xquad-r``
the folder's collection name is ``xquad-r-<lang>`` as for the data (or pass ``--collection xquad-r-<lang>``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.language_modules.xquad import LANGUAGES, load_language, question_split

HEADER = "query-id\tcorpus-id\tscore\n"


def write_split_views(data: Path, out: Path, langs=LANGUAGES, heldout_share: float = 1 / 3, seed: int = 13,
                      dev: int = 100) -> dict[str, dict[str, int]]:
    """Write ``out/<lang>/{corpus.jsonl, queries.jsonl, qrels/heldout.tsv, qrels/dev.tsv}``; questions per split."""
    from training.language_modules.interpolation import dev_questions

    missing = [str(Path(data) / lang / name) for lang in langs for name in ("corpus.jsonl", "queries.jsonl")
               if not (Path(data) / lang / name).is_file()]
    if missing:  # checked before anything is written: no half-made views
        raise FileNotFoundError(f"not an XQuAD-R folder (one BEIR folder per language): missing {', '.join(missing[:3])}")
    counts = {}
    for lang in langs:
        source, folder = (Path(data) / lang).resolve(), Path(out) / lang
        (folder / "qrels").mkdir(parents=True, exist_ok=True)
        for name in ("corpus.jsonl", "queries.jsonl"):
            link = folder / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source / name)
        xquad = load_language(Path(data), lang)
        _, heldout = question_split(xquad, heldout_share, seed)
        splits = {"heldout": heldout, "dev": dev_questions(xquad, dev, heldout_share, seed)}
        for split, qids in splits.items():
            (folder / "qrels" / f"{split}.tsv").write_text(HEADER + "".join(f"{q}\t{xquad.answer[q]}\t1\n" for q in qids),
                                                          encoding="utf-8")
        counts[lang] = {split: len(qids) for split, qids in splits.items()}
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the xquad-r folder (one BEIR folder per language)")
    parser.add_argument("--out", type=Path, required=True, help="end it in xquad-r to keep the collection names")
    parser.add_argument("--langs", default=",".join(LANGUAGES))
    parser.add_argument("--heldout-share", type=float, default=1 / 3)
    parser.add_argument("--dev", type=int, default=100)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    try:
        counts = write_split_views(args.data, args.out, args.langs.split(","), args.heldout_share, args.seed, args.dev)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for lang, row in counts.items():
        print(f"{args.out / lang}\t" + "\t".join(f"{split} {n}" for split, n in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
