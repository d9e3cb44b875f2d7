"""The training loop shared by every dense job: sentence-transformers losses over our own batches.

The losses are sentence-transformers' own (``MultipleNegativesRankingLoss``, its cached
GradCache variant for large batches, ``MSELoss`` for distillation). The loop is ours, not
``SentenceTransformerTrainer``: the GPU machine has no ``datasets`` package, batches must keep
one domain and no two pairs of one document (see :func:`make_batches`), and the MoE and Mamba
modules are not ``SentenceTransformer`` objects. A module only needs ``tokenize(texts,
max_length, domain)`` and ``module(features) -> {"sentence_embedding": ...}``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Sequence

import numpy as np

from training.dense.examples import Example, make_batches

logger = logging.getLogger(__name__)


class LossName(str, Enum):
    mnrl = "mnrl"
    cached_mnrl = "cached-mnrl"


@dataclass
class TrainConfig:
    """Optimisation settings of one run (recorded in its card)."""

    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_steps: int | None = None
    time_budget_s: float | None = None
    """Stop early after this many seconds (the card records the steps done, to rerun with --max-steps)."""
    loss: LossName = LossName.mnrl
    mini_batch_size: int = 32
    scale: float = 20.0
    query_max_length: int = 64
    doc_max_length: int = 256
    seed: int = 13
    bf16: bool = True


@dataclass
class TrainStats:
    steps: int = 0
    examples: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    stopped_by: str = "epochs"

    def summary(self) -> dict[str, Any]:
        head, tail = self.losses[:10], self.losses[-10:]
        return {"steps": self.steps, "examples": self.examples, "seconds": round(self.seconds, 1),
                "loss_first10": round(float(np.mean(head)), 4) if head else None,
                "loss_last10": round(float(np.mean(tail)), 4) if tail else None, "stopped_by": self.stopped_by}


def wrap_sentence_transformer(model: Any):
    """Give a ``SentenceTransformer`` the ``tokenize(texts, max_length, domain)`` of our own modules."""
    import torch.nn as nn

    class SentenceTransformerModule(nn.Module):
        def __init__(self, st):
            super().__init__()
            self.st = st

        def tokenize(self, texts: list[str], max_length: int, domain: str | None = None) -> dict[str, Any]:
            return dict(self.st.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                                          pad_to_multiple_of=32, return_tensors="pt"))

        def forward(self, features: dict[str, Any]) -> dict[str, Any]:
            return self.st(dict(features))

        def __getitem__(self, index: int):  # the cached loss inspects model[0]
            return self.st[index]

    return SentenceTransformerModule(model)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def build_contrastive_loss(module: Any, cfg: TrainConfig):
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    if LossName(cfg.loss) is LossName.cached_mnrl:
        return CachedMultipleNegativesRankingLoss(module, scale=cfg.scale, mini_batch_size=cfg.mini_batch_size)
    return MultipleNegativesRankingLoss(module, scale=cfg.scale)


def _to(features: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) for k, v in features.items()}


def contrastive_inputs(module: Any, batch: Sequence[Example], cfg: TrainConfig, device: str):
    """Token features of the query, positive and negative columns of a batch (one domain)."""
    domain = batch[0].domain
    cols = [module.tokenize([ex.query for ex in batch], cfg.query_max_length, domain),
            module.tokenize([ex.positive for ex in batch], cfg.doc_max_length, domain)]
    n_neg = min(len(ex.negatives) for ex in batch)
    for j in range(n_neg):
        cols.append(module.tokenize([ex.negatives[j] for ex in batch], cfg.doc_max_length, domain))
    return [_to(c, device) for c in cols], None


def train_loop(module: Any, loss: Any, batches: Sequence[Any], make_inputs: Callable[[Any], tuple[list, Any]],
               cfg: TrainConfig, device: str, batch_len: Callable[[Any], int] = len) -> TrainStats:
    """AdamW with linear warm-up/decay over ``epochs`` passes of ``batches`` (bf16 autocast on CUDA)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    module.to(device).train()
    steps_per_epoch = len(batches)
    total = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total * cfg.warmup_ratio), total)
    use_bf16 = cfg.bf16 and str(device).startswith("cuda")
    stats, start = TrainStats(), time.perf_counter()
    order = list(range(steps_per_epoch))
    rng = random.Random(cfg.seed)
    while stats.steps < total:
        rng.shuffle(order)
        for i in order:
            if stats.steps >= total:
                break
            if cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s:
                stats.stopped_by = "time_budget"
                total = stats.steps
                break
            features, labels = make_inputs(batches[i])
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
            with ctx:
                value = loss(features, labels)
            if value.requires_grad:  # the cached loss has already run its backward pass
                value.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            stats.steps += 1
            stats.examples += batch_len(batches[i])
            stats.losses.append(float(value.detach()))
            if stats.steps % 50 == 0:
                logger.info("step %d/%d loss %.4f", stats.steps, total, np.mean(stats.losses[-50:]))
    if cfg.max_steps is not None and stats.steps >= cfg.max_steps and stats.stopped_by == "epochs":
        stats.stopped_by = "max_steps"
    stats.seconds = time.perf_counter() - start
    module.eval()
    return stats


def train_contrastive(module: Any, examples: list[Example], cfg: TrainConfig, device: str) -> TrainStats:
    """Multiple-negatives ranking (in-batch + hard negatives) over ``examples``."""
    if not examples:
        raise ValueError("no training examples: check the dataset and the task")
    batches = make_batches(examples, cfg.batch_size, random.Random(cfg.seed))
    loss = build_contrastive_loss(module, cfg)
    return train_loop(module, loss, batches, lambda b: contrastive_inputs(module, b, cfg, device), cfg, device)


def train_distillation(student: Any, texts: list[str], targets: np.ndarray, cfg: TrainConfig, device: str) -> TrainStats:
    """Embedding regression (sentence-transformers ``MSELoss``): student(text) -> teacher vector."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MSELoss

    if len(texts) != len(targets) or not texts:
        raise ValueError(f"need one target per text, got {len(texts)} texts and {len(targets)} targets")
    rng = random.Random(cfg.seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    target = torch.from_numpy(np.asarray(targets, dtype=np.float32))

    def inputs(idx: list[int]):
        features = student.tokenize([texts[i] for i in idx], cfg.doc_max_length)
        return [_to(features, device)], target[idx].to(device)

    return train_loop(student, MSELoss(student), batches, inputs, cfg, device)
