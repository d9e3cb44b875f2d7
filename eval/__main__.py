"""``python -m eval --dataset DIR --split test --pipeline NAME [--run-file OUT]``.

Runs every judged query of the split through the pipeline (building or reusing
the indexes it needs), writes a TREC run file and prints nDCG@10, RR@10, R@100,
R@1000 and MAP. Several ``--pipeline`` flags evaluate several pipelines.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from eval.runner import run_eval
from eval.trec import write_run
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.settings_paths import default_config_path, default_index_root, default_models_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR-layout folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pipeline", action="append", help="pipeline name (repeatable; default: bm25)")
    parser.add_argument("--run-file", type=Path, help="TREC run output (with several pipelines: a folder)")
    parser.add_argument("--config", type=Path, default=default_config_path())
    parser.add_argument("--index-root", type=Path, default=default_index_root())
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    parser.add_argument("--collection", help="collection name (default: from the folder name)")
    parser.add_argument("--json", action="store_true", help="print metrics as JSON lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    pipelines = args.pipeline or ["bm25"]
    try:
        config = load_config(args.config)
        for name in pipelines:
            res = run_eval(args.dataset, args.split, name, config, args.index_root, args.models_dir, collection=args.collection)
            if args.run_file:
                path = args.run_file / f"{name}.trec" if len(pipelines) > 1 else args.run_file
                write_run(res.results, path, tag=name)
            if args.json:
                print(json.dumps({"dataset": res.dataset, "split": res.split, "pipeline": name, **res.metrics,
                                  "queries": res.num_queries, "seconds": round(res.seconds, 2)}))
            else:
                cols = "  ".join(f"{k}={v:.4f}" for k, v in res.metrics.items())
                print(f"{res.dataset}\t{res.split}\t{name}\t{cols}\t({res.num_queries} queries, {res.seconds:.1f}s)")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
