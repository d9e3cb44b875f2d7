"""``python -m indexer build --dataset DIR [--index NAME ...]``: build and publish indexes.

Examples::

    python -m indexer build --dataset ../shared/data/scifact             # every index in the config
    python -m indexer build --dataset ../shared/data/scifact --index lucene --force
    python -m indexer list
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from indexer.build import ensure_indexes
from pipeline.collection import dataset_name
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.index_store import Manifest
from pipeline.settings_paths import default_config_path, default_index_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or reuse) and publish indexes of a collection")
    build.add_argument("--dataset", type=Path, required=True, help="BEIR folder or a JSONL corpus file")
    build.add_argument("--collection", help="collection name (default: derived from the folder name)")
    build.add_argument("--config", type=Path, default=default_config_path())
    build.add_argument("--index", action="append", help="index name from the config (repeatable; default: all)")
    build.add_argument("--index-root", type=Path, default=default_index_root())
    build.add_argument("--force", action="store_true", help="rebuild even if the published index is up to date")
    ls = sub.add_parser("list", help="list published indexes")
    ls.add_argument("--index-root", type=Path, default=default_index_root())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "build":
            config = load_config(args.config)
            names = args.index or list(config.indexes)
            unknown = [n for n in names if n not in config.indexes]
            if unknown:
                parser.error(f"unknown index {unknown} (config declares {sorted(config.indexes)})")
            collection = args.collection or dataset_name(args.dataset)
            for name, manifest in ensure_indexes(args.dataset, collection, config, names, args.index_root, args.force).items():
                print(f"{collection}/{name}: version {manifest.version}, {manifest.doc_count} docs")
        else:
            for current in sorted(args.index_root.glob("*/*/current")):
                m = Manifest.read(current.resolve())
                print(f"{current.parent.parent.name}/{current.parent.name}\t{m.kind}\t{m.version}\t{m.doc_count} docs")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
