"""Min-max blends of three run files over the same candidates (hybrid, MiniLM cross-encoder, e5 cross-encoder).

    python results/2026-12-04-ce-generalize/e5_probe_blend.py RUN_DIR QRELS_TSV

RUN_DIR holds hybrid.trec, hybrid__ce-raw.trec and hybrid__e5-raw.trec (``python -m eval --run-file``, the
e5-probe.yaml config); every blend is scored on the queries the runs hold (nDCG@10, ir-measures).
"""

import collections
import sys

import ir_measures
from ir_measures import nDCG

WEIGHTS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.3, 0.7, 0), (0.3, 0, 0.7), (0.5, 0, 0.5), (0.3, 0.5, 0.2),
           (0.3, 0.35, 0.35), (0.4, 0.4, 0.2), (0.2, 0.5, 0.3)]


def read(path):
    run = collections.defaultdict(dict)
    for line in open(path):
        q, _, doc, _, score, _ = line.split()
        run[q][doc] = float(score)
    return run


def minmax(x):
    lo, hi = min(x.values()), max(x.values())
    return {k: (v - lo) / (hi - lo) if hi > lo else 0.0 for k, v in x.items()}


def main(run_dir, qrels_path):
    runs = {n: read(f"{run_dir}/{f}") for n, f in [("hybrid", "hybrid.trec"), ("ce", "hybrid__ce-raw.trec"),
                                                     ("e5", "hybrid__e5-raw.trec")]}
    queries = set(runs["ce"])
    qrels = []
    for i, line in enumerate(open(qrels_path)):
        q, doc, rel = line.split()[:3]
        if i and q in queries:
            qrels.append(ir_measures.Qrel(q, doc, int(rel)))
    for weights in WEIGHTS:
        w = dict(zip(("hybrid", "ce", "e5"), weights, strict=True))
        scored = []
        for q in queries:
            docs = list(runs["ce"][q])
            parts = {n: minmax({d: runs[n][q].get(d, min(runs[n][q].values())) for d in docs}) for n in w}
            scored += [ir_measures.ScoredDoc(q, d, sum(w[n] * parts[n][d] for n in w)) for d in docs]
        score = ir_measures.calc_aggregate([nDCG @ 10], qrels, scored)[nDCG @ 10]
        print(f"hybrid {w['hybrid']:<4} ce {w['ce']:<4} e5 {w['e5']:<4} nDCG@10 {score:.4f} ({len(queries)} queries)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
