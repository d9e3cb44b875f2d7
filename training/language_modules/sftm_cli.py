"""``python -m training sftm``: a ranking SFTM and one language SFTM per language (sparse fine-tuning masks).

Two-phase sparse fine-tuning (Ansell et al.; as used by Litschko et al.): fine-tune everything,
keep the ``--density`` share of most-changed weights, fine-tune again from the start updating
only those, and store the sparse difference (int32 index + bf16 value). Language SFTMs are
trained on top of base + ranking SFTM, so the two compose. Output: ``<out>/sftm/{ranking,xx}/``.

Example::

    python -m training sftm --data ../shared/data/xquad-r --out models/lang-modules --density 0.01
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
    parser.add_argument("--density", type=float, default=0.01, help="share of weights kept per module")
    parser.add_argument("--ranking-density", type=float, default=0.02)
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of the sparse (second) phase")
    parser.add_argument("--full-lr", type=float, default=3e-5, help="learning rate of the full (first) phase")


def run(args: argparse.Namespace) -> int:
    from pipeline.scorers.language_modules import load_module, save_sftm
    from training.language_modules.trainer import train_sftm

    model, tokenizer, identity = load_base_for_training(args)
    root = args.out / "sftm"
    common = {"kind": "sftm", "base": args.base, "base_sha256": identity, "lr": args.lr, "full_lr": args.full_lr,
              "epochs": args.epochs, "seed": args.seed, "heldout_share": args.heldout_share}
    if not args.no_ranking:
        groups, n_train, _ = groups_for(args, args.ranking_lang)
        start = time.perf_counter()
        deltas, losses = train_sftm(model, tokenizer, groups, settings(args, args.lr), args.ranking_density,
                                    full_lr=args.full_lr)
        save_sftm(root / "ranking", deltas, {"density": args.ranking_density})
        write_meta(root / "ranking", role="ranking", lang=args.ranking_lang, density=args.ranking_density,
                   train_questions=n_train, losses=losses, seconds=round(time.perf_counter() - start, 1), **common)
    ranking = load_module(root / "ranking", "ranking")
    for lang in args.langs.split(","):
        groups, n_train, _ = groups_for(args, lang)
        start = time.perf_counter()
        deltas, losses = train_sftm(model, tokenizer, groups, settings(args, args.lr), args.density, under=[ranking],
                                    full_lr=args.full_lr)
        save_sftm(root / lang, deltas, {"density": args.density})
        write_meta(root / lang, role="language", lang=lang, under="ranking", density=args.density,
                   train_questions=n_train, losses=losses, seconds=round(time.perf_counter() - start, 1), **common)
        logger.info("sftm %s: %d questions, losses %s", lang, n_train, losses)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run without the ``python -m training`` dispatcher (e.g. where other jobs' dependencies are missing)."""
    import sys

    parser = argparse.ArgumentParser(prog="python -m training.language_modules.sftm_cli", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
