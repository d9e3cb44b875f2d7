"""XQuAD-R for module training: questions split by article, training groups, held-out queries.

A sentence id is ``article-paragraph-sentence``; a question belongs to the article of its
relevant sentence. :func:`split_articles` shuffles the 48 article ids with a fixed seed and
holds out a share of them (the same articles for every language, since the collections are
parallel), so no held-out question or sentence is ever trained on.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = ("en", "de", "es", "ar", "zh", "ru")


@dataclass(frozen=True)
class XQuADLanguage:
    lang: str
    sentences: dict[str, str]
    questions: dict[str, str]
    answer: dict[str, str]
    """question id -> its relevant sentence id."""

    def article_of(self, qid: str) -> str:
        return article(self.answer[qid])


def article(sentence_id: str) -> str:
    return sentence_id.split("-")[0]


def paragraph(sentence_id: str) -> str:
    return sentence_id.rsplit("-", 1)[0]


def load_language(root: Path, lang: str) -> XQuADLanguage:
    """Read ``<root>/<lang>/{corpus.jsonl,queries.jsonl,qrels/test.tsv}``."""
    folder = Path(root) / lang
    sentences = {}
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                sentences[row["_id"]] = row["text"]
    questions = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                questions[row["_id"]] = row["text"]
    answer = {}
    for line in (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 3 and int(float(parts[2])) > 0:
            answer[parts[0]] = parts[1]
    return XQuADLanguage(lang, sentences, questions, answer)


def split_articles(articles: list[str], heldout_share: float = 1 / 3, seed: int = 13) -> tuple[set[str], set[str]]:
    """``(train, heldout)`` article ids; deterministic for a seed."""
    if not 0 < heldout_share < 1:
        raise ValueError("heldout_share must be in (0, 1)")
    ordered = sorted(set(articles), key=lambda a: (len(a), a))
    random.Random(seed).shuffle(ordered)
    n = max(1, round(len(ordered) * heldout_share))
    return set(ordered[n:]), set(ordered[:n])


def question_split(data: XQuADLanguage, heldout_share: float = 1 / 3, seed: int = 13) -> tuple[list[str], list[str]]:
    """``(train question ids, held-out question ids)``, split by article."""
    train_articles, _ = split_articles([article(s) for s in data.sentences], heldout_share, seed)
    qids = sorted(data.answer)
    return ([q for q in qids if data.article_of(q) in train_articles],
            [q for q in qids if data.article_of(q) not in train_articles])


def training_groups(data: XQuADLanguage, qids: list[str], negatives: int = 7, seed: int = 13) -> list[tuple[str, list[str]]]:
    """``(question, [positive, negative...])``: negatives from the same paragraph first, then the same article."""
    rng = random.Random(seed)
    by_article: dict[str, list[str]] = {}
    for sid in data.sentences:
        by_article.setdefault(article(sid), []).append(sid)
    groups = []
    for qid in qids:
        pos = data.answer[qid]
        same_par = [s for s in by_article[article(pos)] if paragraph(s) == paragraph(pos) and s != pos]
        other = [s for s in by_article[article(pos)] if paragraph(s) != paragraph(pos)]
        rng.shuffle(same_par)
        rng.shuffle(other)
        negs = (same_par + other)[:negatives]
        if len(negs) < negatives:  # tiny article: borrow from anywhere
            pool = [s for s in data.sentences if s != pos and s not in negs]
            negs += rng.sample(pool, negatives - len(negs))
        groups.append((data.questions[qid], [data.sentences[pos]] + [data.sentences[s] for s in negs]))
    return groups
