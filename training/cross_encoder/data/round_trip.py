"""Filter generated questions: degenerate outputs, then round-trip consistency (InPars / Promptagator).

A question is kept only if a zero-shot first stage, searching the *whole* corpus, ranks the
document it was generated from within the top ``keep_top``. The first stage needs no Java: exact
dense search with the packaged all-MiniLM-L6-v2 (a matrix product over normalised corpus
embeddings, on the GPU when there is one; the corpus embeddings are kept in the output folder for
re-runs), a small BM25 over word tokens computed with scipy
(k1 0.9, b 0.4, title + text, no stemming), or both fused by reciprocal rank (k 60, each list cut
at ``depth``) like the project's ``hybrid`` pipeline.

Before that, :func:`degenerate_reason` drops empty or too short/long outputs, copies of the
document's start (its first sentence, or >= 80% of the question's content words found in the
passage's first words), copies of a few-shot example question and duplicates.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)

MIN_WORDS, MAX_WORDS = 3, 24
COPY_OVERLAP = 0.8
RRF_K = 60
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from had has have how i in is it its of on or that the their there "
    "these this to was were what when where which who why will with you your".split())


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS]


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]


def overlap(query: str, reference_words: Sequence[str]) -> float:
    """Share of the question's content words (stopwords out) that occur in ``reference_words``."""
    q = content_words(query)
    if not q:
        return 1.0
    ref = set(reference_words)
    return sum(w in ref for w in q) / len(q)


def degenerate_reason(query: str, passage: str, examples: Sequence[str] = ()) -> str | None:
    """Why ``query`` (generated from ``passage``, title first) is unusable, or None.

    The passage start is its first sentence, extended to at least the question's length + 5 words.
    """
    n = len(words(query))
    if n == 0:
        return "empty"
    if n < MIN_WORDS:
        return "too-short"
    if n > MAX_WORDS:
        return "too-long"
    norm = " ".join(words(query))
    if any(norm == " ".join(words(e)) or overlap(query, words(e)) >= COPY_OVERLAP for e in examples):
        return "copies-example"
    sentence = " ".join(words(first_sentence(passage)))
    if norm in sentence or (sentence and sentence in norm):
        return "echoes-first-sentence"
    passage_words = words(passage)
    start = passage_words[:max(len(sentence.split()), n + 5)]
    if overlap(query, start) >= COPY_OVERLAP:
        return "copies-passage-start"
    return None


class Bm25Matrix:
    """BM25 over word tokens as a sparse document x term matrix (scipy); ``scores(queries)`` is dense."""

    def __init__(self, passages: Sequence[str], k1: float = 0.9, b: float = 0.4):
        import numpy as np
        from scipy import sparse

        self.vocab: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        lengths = np.zeros(len(passages), dtype=np.float64)
        for i, passage in enumerate(passages):
            counts: dict[int, int] = {}
            tokens = words(passage)
            lengths[i] = len(tokens)
            for t in tokens:
                j = self.vocab.setdefault(t, len(self.vocab))
                counts[j] = counts.get(j, 0) + 1
            rows.extend([i] * len(counts))
            cols.extend(counts)
            tfs.extend(counts.values())
        rows_a, cols_a, tf = np.array(rows), np.array(cols, dtype=np.int64), np.array(tfs, dtype=np.float64)
        df = np.bincount(cols_a, minlength=len(self.vocab))
        idf = np.log1p((len(passages) - df + 0.5) / (df + 0.5))
        norm = k1 * (1 - b + b * lengths / max(lengths.mean(), 1.0))
        weights = idf[cols_a] * tf * (k1 + 1) / (tf + norm[rows_a])
        self.matrix = sparse.csr_matrix((weights, (rows_a, cols_a)), shape=(len(passages), len(self.vocab)))

    def scores(self, queries: Sequence[str]):
        """``len(queries) x documents`` float32 array (each distinct query term counted once)."""
        from scipy import sparse

        rows, cols = [], []
        for i, q in enumerate(queries):
            terms = {self.vocab[t] for t in words(q) if t in self.vocab}
            rows.extend([i] * len(terms))
            cols.extend(terms)
        q = sparse.csr_matrix(([1.0] * len(rows), (rows, cols)), shape=(len(queries), len(self.vocab)))
        return (q @ self.matrix.T).toarray().astype("float32")


class DenseMatrix:
    """all-MiniLM-L6-v2 embeddings of the corpus, searched exactly by a matrix product (torch, GPU if given)."""

    def __init__(self, passages: Sequence[str], model_path=None, device: str | None = None, batch_size: int = 128,
                 cache_dir: Path | None = None):
        import numpy as np
        import torch
        from sentence_transformers import SentenceTransformer

        from training.cross_encoder.model import packaged_minilm

        self.model = SentenceTransformer(str(model_path or packaged_minilm()), device=device)
        self.batch_size = batch_size
        digest = hashlib.sha256("\x00".join([str(model_path or "packaged-minilm"), *passages]).encode()).hexdigest()
        cached = Path(cache_dir) / f"corpus-minilm-{digest[:12]}.npy" if cache_dir else None
        if cached is not None and cached.is_file():
            vectors = np.load(cached)
        else:  # minutes for ~5k abstracts on a CPU, seconds on a GPU: kept for re-runs
            logger.info("encoding %d documents with MiniLM on %s", len(passages), self.model.device)
            vectors = self.model.encode(list(passages), batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True).astype(np.float16)
            if cached is not None:
                tmp = cached.with_suffix(".tmp.npy")
                np.save(tmp, vectors)
                tmp.replace(cached)
        self.vectors = torch.from_numpy(vectors).to(self.model.device, torch.float32)

    def scores(self, queries: Sequence[str]):
        vecs = self.model.encode(list(queries), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_tensor=True)
        return (vecs.float() @ self.vectors.T).cpu().numpy()


def source_ranks(score_lists: Sequence, sources: Sequence[int], depth: int = 100) -> list[int | None]:
    """1-based rank of each row's source document under the RRF fusion of ``score_lists`` (each cut at
    ``depth``; one list = its plain ranking); None when the source is in none of the cut lists."""
    import numpy as np

    fused = np.zeros_like(np.asarray(score_lists[0], dtype=np.float64))
    for scores in score_lists:
        scores = np.asarray(scores)
        d = min(depth, scores.shape[1])
        top = np.argpartition(-scores, d - 1, axis=1)[:, :d]
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
        np.put_along_axis(fused, order, np.take_along_axis(fused, order, 1) + 1.0 / (RRF_K + np.arange(1, d + 1)), 1)
    ranks = []
    for row, src in zip(fused, sources, strict=True):
        ranks.append(None if row[src] == 0 else int((row > row[src]).sum()) + 1)
    return ranks


class FirstStage:
    """The round-trip retriever over a whole corpus: ``dense``, ``bm25`` or ``hybrid`` (RRF of both)."""

    def __init__(self, passages: Sequence[str], kind: str = "hybrid", device: str | None = None,
                 dense_model=None, depth: int = 100, cache_dir: Path | None = None):
        if kind not in ("dense", "bm25", "hybrid"):
            raise ValueError(f"unknown first stage {kind!r} (dense, bm25, hybrid)")
        self.kind, self.depth = kind, depth
        self.bm25 = Bm25Matrix(passages) if kind in ("bm25", "hybrid") else None
        self.dense = (DenseMatrix(passages, dense_model, device, cache_dir=cache_dir) if kind in ("dense", "hybrid")
                      else None)

    def ranks(self, queries: Sequence[str], sources: Sequence[int], chunk: int = 256) -> list[int | None]:
        """Rank of each query's source document (None: beyond ``depth`` in every list)."""
        out: list[int | None] = []
        for start in range(0, len(queries), chunk):
            part = list(queries[start:start + chunk])
            lists = [m.scores(part) for m in (self.dense, self.bm25) if m is not None]
            out.extend(source_ranks(lists, sources[start:start + chunk], self.depth))
        return out

    def describe(self) -> str:
        parts = {"dense": "all-MiniLM-L6-v2 exact", "bm25": "BM25 (scipy, k1 0.9 b 0.4, no stemming)"}
        if self.kind == "hybrid":
            return f"RRF (k {RRF_K}, top {self.depth} of each) of {parts['dense']} and {parts['bm25']}"
        return parts[self.kind]
