"""``python -m indexer build --dataset DIR [--index NAME ...]``: build and publish indexes.

Examples::

    python -m indexer build --dataset ../shared/data/scifact             # every index in the config
    python -m indexer build --dataset ../shared/data/scifact --index lucene --force
    python -m indexer list
    python -m indexer build-distributed --dataset ../shared/data/scifact --index lucene --shards 4   # on Ray
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from indexer.build import ensure_indexes
from pipeline.core.errors import PipelineError
from pipeline.core.settings_paths import default_config_path, default_index_root
from pipeline.registry import load_config
from pipeline.storage.collection import dataset_name
from pipeline.storage.index_store import Manifest


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
    dist = sub.add_parser("build-distributed", help="build one index on Ray (shards in parallel), merge or publish shards")
    dist.add_argument("--dataset", type=Path, required=True, help="BEIR folder or a JSONL corpus file")
    dist.add_argument("--collection", help="collection name (default: derived from the folder name)")
    dist.add_argument("--config", type=Path, default=default_config_path())
    dist.add_argument("--index", default="lucene", help="a lucene or faiss index name from the config")
    dist.add_argument("--name", help="publish under this name (default: --index, or '<index>-shards' for --layout shards)")
    dist.add_argument("--index-root", type=Path, default=default_index_root())
    dist.add_argument("--shards", type=int, default=4)
    dist.add_argument("--layout", choices=["merged", "shards"], default="merged")
    dist.add_argument("--ray-address", help="'auto' inside a Ray cluster (RayJob); default: a local Ray")
    dist.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
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
        elif args.command == "build-distributed":
            _build_distributed(args, parser)
        else:
            for current in sorted(args.index_root.glob("*/*/current")):
                m = Manifest.read(current.resolve())
                print(f"{current.parent.parent.name}/{current.parent.name}\t{m.kind}\t{m.version}\t{m.doc_count} docs")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _build_distributed(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from indexer.distributed import RayOptions, publish_distributed
    from pipeline.core.config import parse_index

    config = load_config(args.config)
    if args.index not in config.indexes:
        parser.error(f"unknown index {args.index!r} (config declares {sorted(config.indexes)})")
    cfg = parse_index(args.index, config.indexes[args.index])
    try:
        options = RayOptions(num_shards=args.shards, layout=args.layout, address=args.ray_address, num_cpus=args.num_cpus)
        if cfg.type == "faiss" and options.layout != "merged":
            raise ValueError(f"index {args.index!r} is a faiss index: only --layout merged")
    except ValueError as exc:
        parser.error(str(exc))
    collection = args.collection or dataset_name(args.dataset)
    name = args.name or (args.index if options.layout == "merged" else f"{args.index}-shards")
    _, manifest = publish_distributed(args.dataset, collection, name, cfg, args.index_root, options)
    print(f"{collection}/{name}: version {manifest.version}, {manifest.doc_count} docs, "
          f"{options.num_shards} shards ({manifest.kind})")


if __name__ == "__main__":
    sys.exit(main())
