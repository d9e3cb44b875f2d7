"""Arguments and helpers shared by ``python -m training dense|moe|mamba``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable

from pipeline.core.errors import ConfigError
from pipeline.core.settings_paths import default_data_dir
from pipeline.encoders.bi_encoders import ENCODER_JSON
from training.dense.contrastive import LossName, TrainConfig
from training.dense.retrieval_eval import EvalSet, load_eval_set
from training.dense.supervised import carve_dev, split_by_article

logger = logging.getLogger(__name__)

DEV_FRACTION = 0.1
XQUAD_TRAIN_FRACTION = 0.5


def add_common(parser: argparse.ArgumentParser, default_lr: float = 2e-5) -> None:
    """Data, output, seed, optimisation and evaluation flags."""
    parser.add_argument("--data-dir", type=Path, default=None, help="collections root (default: ../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help="model folder to write (omit to only evaluate)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--split-seed", type=int, default=13, help="seed of the dev / held-out article splits")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=default_lr)
    parser.add_argument("--loss", choices=[x.value for x in LossName], default=LossName.mnrl.value,
                        help="mnrl, or cached-mnrl (GradCache) for batches larger than memory allows")
    parser.add_argument("--mini-batch-size", type=int, default=32, help="cached-mnrl's chunk size")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds of training")
    parser.add_argument("--query-max-length", type=int, default=64)
    parser.add_argument("--doc-max-length", type=int, default=256)
    parser.add_argument("--eval", action="append", default=[], metavar="COLLECTION:SPLIT",
                        help="evaluate after training, e.g. scifact:test, cranfield:test, scifact:dev, "
                             "xquad-r/en:heldout (repeatable)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="write TREC runs of the evaluations here")


def train_config(args: argparse.Namespace) -> TrainConfig:
    if args.batch_size < 2:
        raise ConfigError("--batch-size must be >= 2 (in-batch negatives)")
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=LossName(args.loss),
                       mini_batch_size=args.mini_batch_size, max_steps=args.max_steps, time_budget_s=args.time_budget,
                       query_max_length=args.query_max_length, doc_max_length=args.doc_max_length, seed=args.seed)


def data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else default_data_dir()


def device_of(args: argparse.Namespace) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def collection_dir(root: Path, name: str) -> Path:
    path = Path(root) / name
    if not (path / "corpus.jsonl").is_file():
        raise ConfigError(f"collection {name!r}: no corpus.jsonl under {path} (set --data-dir)")
    return path


def eval_sets(root: Path, specs: list[str], split_seed: int) -> list[EvalSet]:
    """Eval sets from ``COLLECTION:SPLIT`` specs; ``dev`` is carved from train, ``heldout`` = XQuAD-R held-out articles."""
    from pipeline.storage.collection import load_qrels

    out = []
    for spec in specs:
        name, _, split = spec.rpartition(":")
        if not name or not split:
            raise ConfigError(f"--eval {spec!r}: expected COLLECTION:SPLIT, e.g. scifact:test")
        folder = collection_dir(root, name)
        if split == "dev":
            _, dev = carve_dev(load_qrels(folder, "train"), DEV_FRACTION, split_seed)
            out.append(load_eval_set(folder, "train", f"{name}/dev", set(dev)))
        elif split == "heldout":
            _, held = split_by_article(load_qrels(folder, "test"), XQUAD_TRAIN_FRACTION, split_seed)
            out.append(load_eval_set(folder, "test", f"{name}/heldout", held))
        else:
            out.append(load_eval_set(folder, split, f"{name}/{split}"))
    return out


def encoder_kind(path: Path) -> str:
    meta = Path(path) / ENCODER_JSON
    if not meta.is_file():
        return "sentence-transformers"
    try:
        return str(json.loads(meta.read_text())["kind"])
    except (json.JSONDecodeError, KeyError) as exc:
        raise ConfigError(f"{meta}: expected JSON with a 'kind' ({exc})") from exc


def load_trainable(init: str) -> tuple[Any, str, Callable[[Path], None]]:
    """``(module, kind, save)`` for ``minilm``, a sentence-transformers folder or a Mamba folder (fp32, on CPU)."""
    if init == "minilm":
        from pipeline.encoders.bi_encoders import minilm_path

        path = minilm_path()
    else:
        path = Path(init)
        if not path.is_dir():
            raise ConfigError(f"--init {init!r}: not 'minilm' nor a model folder")
    kind = encoder_kind(path)
    if kind == "mamba":
        from pipeline.encoders.mamba import load_mamba_module

        module = load_mamba_module(path)
        return module, kind, lambda out: module.save(out)
    if kind != "sentence-transformers":
        raise ConfigError(f"--init {init!r} is a {kind!r} model: train it with `python -m training {kind}`")
    from sentence_transformers import SentenceTransformer

    from training.dense.contrastive import wrap_sentence_transformer

    st = SentenceTransformer(str(path), device="cpu", local_files_only=True).float()
    return wrap_sentence_transformer(st), kind, lambda out: st.save(str(out))


def save_weights_checksum(folder: Path) -> str:
    from pipeline.encoders.bi_encoders import weights_checksum

    return weights_checksum(folder)
