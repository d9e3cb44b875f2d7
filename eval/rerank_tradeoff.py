"""How deep and how long the reranker must read: nDCG@10 and scoring cost over a grid of depths and lengths.

For one dataset split and one reranking pipeline (e.g. ``hybrid>>ce``), the first stage runs once;
then every candidate pair of the top ``max(depths)`` is scored once per passage length (``max_length``
of the served cross-encoder stage, every other setting as configured) and cached on disk, so the
whole grid costs one scoring pass per length and a crashed run resumes where it stopped. Each
``(depth, length)`` point is then the served stage's output computed from the cache: the top
``depth`` candidates, the stage's ``interpolate`` blend, sorted (:class:`~pipeline.stages.rerank.RerankStage`'s
own functions), scored with ir-measures. The cost column is the measured scoring time of those pairs
(CPU seconds per query, from the timed pass), relative to the configured pipeline's point::

    python -m eval.rerank_tradeoff --dataset ../shared/data/scifact --split dev --pipeline 'hybrid>>ce' \\
        --depths 10,20,30,50,100 --lengths 384,256,192 --cache .cache/tradeoff

Choose a point on dev data (``--split dev`` is carved from train by ``python -m eval``'s rules), then
report it once on test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from eval.experiment import Experiment
from eval.metrics import evaluate
from eval.runner import remove_self_hits
from pipeline.core.score_fusion import rerank_output
from pipeline.core.types import Results
from pipeline.registry import build_stage, load_config
from pipeline.storage.collection import dataset_name

logger = logging.getLogger(__name__)


def _ints(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


WORDS_PER_TOKEN = 0.7  # word pieces per word run about 1.3-1.5 on English prose: a window's words for a token budget


def windowed_texts(stage, query, doc_ids, length: int) -> dict[str, str]:
    """The query-aware window (:mod:`eval.passage_window`) of each candidate, sized for ``length``."""
    from eval.passage_window import query_window

    docs = stage.passages.docs.get_many(list(doc_ids))
    words = max(int(length * WORDS_PER_TOKEN) - len(query.text.split()), 16)
    return {i: query_window(query.text, docs[i].title, docs[i].text, words) if i in docs else "" for i in doc_ids}


def _prunes(text: str) -> list[tuple[int, float, int]]:
    """``LAYER:KEEP[:MIN]`` items, comma-separated (MIN: passage tokens never pruned below; default 0)."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        parts = item.split(":")
        try:
            layer, keep, minimum = int(parts[0]), float(parts[1]), int(parts[2]) if len(parts) == 3 else 0
        except (ValueError, IndexError):
            raise argparse.ArgumentTypeError(f"{item!r}: expected LAYER:KEEP[:MIN]") from None
        if len(parts) > 3 or layer < 0 or not 0 < keep <= 1 or minimum < 0:
            raise argparse.ArgumentTypeError(f"{item!r}: expected LAYER:KEEP[:MIN], LAYER >= 0, 0 < KEEP <= 1, MIN >= 0")
        out.append((layer, keep, minimum))
    return out


def set_pruning(stage, prune: tuple[int, float, int] | None) -> None:
    """Token pruning of the stage's engine (:func:`pipeline.scorers.fast_bert.set_pruning`); None: off."""
    from pipeline.scorers.fast_bert import set_pruning as set_module_pruning

    model = stage.scorer.engine.model
    layer, keep, minimum = prune if prune else (None, 1.0, 0)
    try:
        set_module_pruning(model if hasattr(model, "prune_layer") else None, layer, keep, minimum)
    except ValueError as exc:
        raise SystemExit(f"--prune: {exc}") from exc


def score_cache(exp: Experiment, raw: dict, candidates: Results, length: int, path: Path, batch: int = 8,
                window: bool = False, prune: tuple[int, float, int] | None = None) -> dict:
    """``{qid: {"scores": [...], "seconds": s}}`` for every query's candidates at ``max_length=length``;
    read from ``path`` where present, the rest scored (timed per query) and appended as it goes."""
    done: dict = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the last line of a run killed mid-write: scored again
                continue
            done[row["qid"]] = row
    todo = [q for q in exp.queries if q.query_id not in done and candidates.get(q.query_id)]
    if not todo:
        return done
    stage = build_stage({**raw, "max_length": length, "time_budget_ms": None}, exp.ctx, f"tradeoff max_length={length}")
    set_pruning(stage, prune)  # the engine is shared by every stage of this process: set for each pass
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        for i in range(0, len(todo), batch):
            chunk = todo[i : i + batch]
            for q in chunk:
                hits = candidates[q.query_id]
                ids = sorted({h.doc_id for h in hits})
                start = time.process_time()  # the window costs CPU too: inside the timed part
                texts = windowed_texts(stage, q, ids, length) if window else stage.passages.texts(ids)
                scores = stage.scorer.score_batch([q], [[texts[h.doc_id] for h in hits]])[0]
                row = {"qid": q.query_id, "scores": [float(s) for s in scores], "seconds": time.process_time() - start}
                done[q.query_id] = row
                out.write(json.dumps(row) + "\n")
            out.flush()
            logger.info("max_length %d: %d of %d queries scored", length, len(done), len(exp.queries))
    return done


def point(candidates: Results, cache: dict, depth: int, alpha: float | None, name: str) -> Results:
    """The stage's output at ``depth`` from cached scores: RerankStage's own :func:`rerank_output`."""
    out: Results = {}
    for qid, hits in candidates.items():
        if qid not in cache or not hits:
            out[qid] = list(hits)
            continue
        reranked = [h.rescored(name, s) for h, s in zip(hits[:depth], cache[qid]["scores"][:depth], strict=True)]
        out[qid] = rerank_output(reranked, hits, alpha, name)
    return out


def seconds_at(cache: dict, depth: int) -> float:
    """Mean scoring CPU seconds per query for the top ``depth`` (pro rata of the timed pass over all candidates)."""
    rows = [r for r in cache.values() if r["scores"]]
    return sum(r["seconds"] * min(depth, len(r["scores"])) / len(r["scores"]) for r in rows) / max(1, len(rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--split", default="test",
                   help="a qrels split, or 'dev': the reranker's own dev queries (--dev-queries of train, carved "
                        "with --seed exactly as `python -m training cross-encoder mine` held them out of training)")
    p.add_argument("--dev-queries", type=int, default=100)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--pipeline", default="hybrid>>ce")
    p.add_argument("--config", type=Path, default=Path("configs/pipelines.yaml"))
    p.add_argument("--index-root", type=Path, default=None, help="default: $SEARCH_INDEX_ROOT or ./indexes")
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--depths", type=_ints, default=[10, 20, 30, 50, 100])
    p.add_argument("--lengths", type=_ints, default=[384, 256, 192])
    p.add_argument("--window-lengths", type=_ints, default=[],
                   help="also score query-aware passage windows sized for these max_length values")
    p.add_argument("--prune", type=_prunes, default=[],
                   help="also score with token pruning at the configured max_length: LAYER:KEEP[:MIN],... (the KEEP "
                        "share of passage tokens, at least MIN, goes on from that layer, by the query's attention)")
    p.add_argument("--max-queries", type=int, default=None)
    p.add_argument("--cache", type=Path, default=Path(".cache/tradeoff"))
    p.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    index_root = args.index_root or Path(os.environ.get("SEARCH_INDEX_ROOT", "indexes"))
    config = load_config(args.config)
    exp = Experiment(args.dataset, "train" if args.split == "dev" else args.split, config, index_root,
                     args.models_dir, max_queries=args.max_queries)
    if args.split == "dev":
        from training.cross_encoder.data.mining import carve_dev

        dev = carve_dev([q.query_id for q in exp.queries], args.dev_queries, args.seed)
        exp.queries = [q for q in exp.queries if q.query_id in dev]
        exp.qrels = {q: r for q, r in exp.qrels.items() if q in dev}
    candidates, raw = exp.rerank_candidates(args.pipeline)
    deepest = max(args.depths)
    candidates = {q: hits[:deepest] for q, hits in candidates.items()}
    folder = args.cache / f"{dataset_name(args.dataset)}-{args.split}-{args.max_queries or 'all'}"
    rows = []
    configured = (raw.get("top_n", 100), raw.get("max_length", 384))
    grid = ([(length, False, None) for length in args.lengths] + [(length, True, None) for length in args.window_lengths]
            + [(configured[1], False, prune) for prune in args.prune])
    for length, window, prune in grid:
        tag = f"-P{prune[0]}-{prune[1]:g}-drop{f'-min{prune[2]}' if prune[2] else ''}" if prune else ""
        name = f"{args.pipeline.replace('>', '')}-{'W' if window else 'L'}{length}{tag}.jsonl"
        cache = score_cache(exp, raw, candidates, length, folder / name, window=window, prune=prune)
        for depth in args.depths:
            run = remove_self_hits(point(candidates, cache, depth, raw.get("interpolate"), raw.get("name", "ce")))
            metrics = evaluate(exp.qrels, {q: {h.doc_id: h.score for h in hits} for q, hits in run.items()})
            rows.append({"depth": depth, "max_length": length, "window": window, "prune": list(prune) if prune else None,
                         **metrics,
                         "cpu_s_per_query": seconds_at(cache, depth)})
    base = next((r for r in rows if (r["depth"], r["max_length"]) == configured and not r["window"] and not r["prune"]),
                rows[0])
    print(f"{dataset_name(args.dataset)} {args.split} {args.pipeline}: {len(exp.queries)} queries; "
          f"baseline = depth {base['depth']}, max_length {base['max_length']} (the configured stage)")
    print("depth  max_len  window  prune            nDCG@10   delta    CPU s/query  speedup")
    for r in rows:
        r["speedup"] = base["cpu_s_per_query"] / r["cpu_s_per_query"] if r["cpu_s_per_query"] else None
        r["delta"] = r["nDCG@10"] - base["nDCG@10"]
        prune = ":".join(str(x) for x in r["prune"]) if r["prune"] else "-"
        print(f"{r['depth']:5d}  {r['max_length']:7d}  {'query' if r['window'] else 'first':>6}  {prune:15s}  "
              f"{r['nDCG@10']:.4f}  {r['delta']:+.4f}  "
              f"{r['cpu_s_per_query']:11.3f}  {r['speedup'] or 0:6.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"dataset": dataset_name(args.dataset), "split": args.split,
                                         "pipeline": args.pipeline, "queries": len(exp.queries), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
