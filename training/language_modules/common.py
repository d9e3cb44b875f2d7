"""What the adapter and SFTM jobs share: arguments, the base model, data, and module metadata."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from training.language_modules.trainer import TrainSettings
from training.language_modules.xquad import LANGUAGES, load_language, question_split, training_groups


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="xquad-r folder (one BEIR folder per language)")
    parser.add_argument("--out", type=Path, required=True, help="modules root, e.g. models/lang-modules")
    parser.add_argument("--base", default="ce-minilm",
                        help="base reranker under models/ (default: the shipped English cross-encoder; the served multilingual "
                             "modules are trained on e5 by training.multilingual.ml_ce instead), "
                             "or 'minilm' (packaged)")
    parser.add_argument("--base-folder", type=Path, help="a copy of the packaged MiniLM to load instead (e.g. on a GPU box)")
    parser.add_argument("--langs", default=",".join(LANGUAGES), help="comma-separated language modules to train")
    parser.add_argument("--ranking-lang", default="en", help="language of the ranking module's training questions")
    parser.add_argument("--no-ranking", action="store_true", help="reuse <out>/<kind>/ranking instead of training it")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-questions", type=int, default=16)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--heldout-share", type=float, default=1 / 3)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--limit", type=int, default=0, help="train on at most this many questions (smoke tests)")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")


def load_base_for_training(args):
    import torch

    from pipeline.scorers.modular import load_base

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, identity = load_base(args.base, Path("models"), device, folder=args.base_folder)
    return model, tokenizer, identity


def groups_for(args, lang: str):
    data = load_language(args.data, lang)
    train, heldout = question_split(data, args.heldout_share, args.seed)
    if args.limit:
        train = train[: args.limit]
    return training_groups(data, train, args.negatives, args.seed), len(train), len(heldout)


def settings(args, lr: float) -> TrainSettings:
    return TrainSettings(epochs=args.epochs, batch_questions=args.batch_questions, lr=lr, max_length=args.max_length,
                         seed=args.seed)


def _main_module() -> str:
    """The module that ``python -m`` ran (``training`` or ``training.language_modules.job``), for the record."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = spec.name if spec is not None else "training"
    return name.removesuffix(".__main__")


def write_meta(folder: Path, **meta) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join([f"python -m {_main_module()}", *sys.argv[1:]]),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}
    (folder / "module.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
