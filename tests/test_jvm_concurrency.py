"""Calls into Java from several Python threads at once return each caller its own results.

pyjnius binds a method to an object through state shared by every object of the class, so two
threads searching two searchers (the shards of ``sharded_bm25``, or two requests' result maps)
could read each other's results or a freed map; ``JVM_CALLS`` serialises the calls.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pipeline.core.types import Query
from pipeline.stages.bm25 import BM25
from service.highlight import lucene_analyzer

WORDS = ["volcano magma lava", "ocean tides moon gravity", "plants glucose sunlight", "black hole light escape",
         "cells divide", "earthquake plates", "photosynthesis light", "stars fusion hydrogen"]


def ranking(stage: BM25, queries: list[Query]) -> dict[str, list[tuple[str, float]]]:
    return {qid: [(h.doc_id, h.score) for h in hits] for qid, hits in stage(queries).items()}


def test_batch_searches_on_two_searchers_from_many_threads_match_sequential(tiny_index):
    searchers = [BM25.from_index(tiny_index, k=10, threads=1), BM25.from_index(tiny_index, k=10, threads=1)]
    batches = [[Query(f"{i}-{j}", WORDS[(i + j) % len(WORDS)]) for j in range(3)] for i in range(len(WORDS))]
    want = [ranking(searchers[0], batch) for batch in batches]

    def search(task: int):
        i = task % len(batches)
        return i, ranking(searchers[task % 2], batches[i])

    with ThreadPoolExecutor(max_workers=8) as pool:
        for i, got in pool.map(search, range(400)):
            assert got == want[i]


def test_the_analyzer_from_many_threads_matches_sequential(tiny_index):
    BM25.from_index(tiny_index)  # starts the JVM
    analyze = lucene_analyzer("en")
    texts = [w + " running cells" for w in WORDS]
    want = [analyze(t) for t in texts]
    assert want[0] and want[0] != texts[0].split()  # Lucene's analyzer (stemming), not the fallback

    def run(task: int):
        i = task % len(texts)
        return i, analyze(texts[i])

    with ThreadPoolExecutor(max_workers=8) as pool:
        for i, got in pool.map(run, range(800)):
            assert got == want[i]
