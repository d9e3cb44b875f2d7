"""``python -m training adapters``: a LoRA ranking module and one LoRA language module per language.

The ranking module is trained on the ``--ranking-lang`` training articles of XQuAD-R (with the
classifier head, since the packaged MiniLM has none); each language module is trained on its
language's training articles on top of base + ranking. Held-out articles are never seen.
Output: ``<out>/lora/{ranking,en,de,...}/`` (peft folders + ``module.json``).

Example::

    python -m training adapters --data ../shared/data/xquad-r --out models/lang-modules --epochs 2
"""

from __future__ import annotations

import argparse
import logging
import time

from training.language_modules.common import (
    add_common_arguments,
    groups_for,
    load_base_for_training,
    settings,
    write_meta,
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)


def run(args: argparse.Namespace) -> int:
    from pipeline.scorers.language_modules import load_module
    from training.language_modules.trainer import train_lora

    model, tokenizer, identity = load_base_for_training(args)
    root = args.out / "lora"
    common = {"kind": "lora", "base": args.base, "base_sha256": identity, "rank": args.rank, "alpha": args.alpha,
              "lr": args.lr, "epochs": args.epochs, "seed": args.seed, "heldout_share": args.heldout_share}
    if not args.no_ranking:
        groups, n_train, _ = groups_for(args, args.ranking_lang)
        start = time.perf_counter()
        losses = train_lora(model, tokenizer, groups, settings(args, args.lr), root / "ranking", rank=args.rank,
                            alpha=args.alpha, train_head=args.base == "minilm")
        write_meta(root / "ranking", role="ranking", lang=args.ranking_lang, train_questions=n_train, losses=losses,
                   seconds=round(time.perf_counter() - start, 1), **common)
    ranking = load_module(root / "ranking", "ranking")
    for lang in args.langs.split(","):
        groups, n_train, _ = groups_for(args, lang)
        start = time.perf_counter()
        losses = train_lora(model, tokenizer, groups, settings(args, args.lr), root / lang, under=[ranking],
                            rank=args.rank, alpha=args.alpha)
        write_meta(root / lang, role="language", lang=lang, under="ranking", train_questions=n_train, losses=losses,
                   seconds=round(time.perf_counter() - start, 1), **common)
        logger.info("lora %s: %d questions, losses %s", lang, n_train, losses)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run without the ``python -m training`` dispatcher (e.g. where other jobs' dependencies are missing)."""
    import sys

    parser = argparse.ArgumentParser(prog="python -m training.language_modules.adapters_cli", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
