"""Command-line options shared by ``python -m eval`` and the regression check (which replays its commands)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core.settings_paths import default_config_path, default_index_root, default_models_dir

DESCRIPTION = """``python -m eval``: the eval job's command line, dispatched on the first argument.

    python -m eval --dataset DIR --split test --pipeline NAME [--run-file OUT]   # one dataset, print metrics
    python -m eval report --datasets DIR [DIR ...] --out reports/                # every servable pipeline
    python -m eval score --qrels DIR_OR_QRELS --run A.trec --run B.trec          # existing run files
    python -m eval regress [eval/regressions/*.yaml] [--pipeline NAME]           # regression matrix
    python -m eval convert --collection C.tsv --topics T --qrels Q --out DIR     # MS MARCO/TREC -> BEIR
"""


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=default_config_path())
    parser.add_argument("--index-root", type=Path, default=default_index_root())
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())


def eval_parser() -> argparse.ArgumentParser:
    """The plain form: ``python -m eval --dataset DIR --split test --pipeline NAME``."""
    parser = argparse.ArgumentParser(prog="python -m eval", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR-layout folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pipeline", "--pipelines", dest="pipeline", action="extend", nargs="+", metavar="NAME",
                        help="pipeline names (repeatable, or several after one flag; default: bm25)")
    parser.add_argument("--run-file", type=Path, help="TREC run output (with several pipelines: a folder)")
    parser.add_argument("--collection", help="collection name (default: from the folder name)")
    parser.add_argument("--max-queries", type=int, help="only the first N judged queries (qrels file order)")
    parser.add_argument("--json", action="store_true", help="print metrics as JSON lines")
    parser.add_argument("--measures", nargs="+", metavar="M", help="ir-measures names, e.g. nDCG@10 P@5 MAP R@100 "
                        "Judged@10 (default: nDCG@10 RR@10 R@100 R@1000 MAP)")
    add_common_options(parser)
    return parser
