"""Training loops for ranking and language modules of the cross-encoder (LoRA and SFTM).

Every job trains on groups ``(question, [positive, negative, ...])`` with a listwise softmax
loss (the positive must outscore its group). A language module is trained on top of the base
with the ranking module merged in, so at inference ``base + ranking + language`` matches
what was trained.

- :func:`train_lora`: peft LoRA on attention and feed-forward matrices (optionally retraining
  the classifier head, for a base without one);
- :func:`train_sftm`: Lottery-Ticket Sparse Fine-Tuning (Ansell et al.): a full fine-tune picks
  the top-``density`` most-changed weights, then a second fine-tune from the start point updates
  only those; the result is the sparse difference.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from pipeline.scorers.language_modules import Module, Sparse, _apply, sparse_difference
from pipeline.scorers.modular import pair_logits

logger = logging.getLogger(__name__)

Group = tuple[str, list[str]]
LORA_TARGETS = ("query", "key", "value", "dense")


@dataclass
class TrainSettings:
    epochs: int = 2
    batch_questions: int = 16
    lr: float = 5e-4
    max_length: int = 128
    seed: int = 13
    warmup_share: float = 0.1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_questions < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_questions and lr must be positive")


def with_modules(model: torch.nn.Module, modules: Sequence[Module]) -> torch.nn.Module:
    """A deep copy of ``model`` with ``modules`` merged in permanently (the start point of a stacked module)."""
    out = copy.deepcopy(model)
    params = dict(out.named_parameters())
    with torch.no_grad():
        for module in modules:
            for name, delta in module.deltas.items():
                _apply(params[name], delta)
    return out


def train_groups(model: torch.nn.Module, tokenizer, groups: Sequence[Group], settings: TrainSettings,
                 after_backward: Callable[[], None] | None = None) -> list[float]:
    """Fine-tune the trainable parameters of ``model`` in place; returns the mean loss per epoch."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    steps = settings.epochs * math.ceil(len(groups) / settings.batch_questions)
    warmup = max(1, int(steps * settings.warmup_share))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup + 1))))
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    order = list(range(len(groups)))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    losses = []
    model.train()
    for epoch in range(settings.epochs):
        rng.shuffle(order)
        total, count, start = 0.0, 0, time.perf_counter()
        for i in range(0, len(order), settings.batch_questions):
            batch = [groups[j] for j in order[i : i + settings.batch_questions]]
            size = len(batch[0][1])
            queries = [q for q, docs in batch for _ in docs]
            docs = [d for _, ds in batch for d in ds]
            enc = tokenizer(queries, docs, truncation="longest_first", max_length=settings.max_length, padding=True,
                            return_tensors="pt").to(device)
            with autocast:
                logits = pair_logits(model(**enc)).float().view(len(batch), size)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long, device=device))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward()
            optim.step()
            sched.step()
            total, count = total + float(loss.detach()), count + 1
        losses.append(total / max(count, 1))
        logger.info("epoch %d: loss %.4f (%d groups, %.1fs)", epoch + 1, losses[-1], len(groups), time.perf_counter() - start)
    model.eval()
    return losses


def train_lora(base: torch.nn.Module, tokenizer, groups: Sequence[Group], settings: TrainSettings, out: Path,
               under: Sequence[Module] = (), rank: int = 8, alpha: int = 16, train_head: bool = False) -> list[float]:
    """Train a LoRA module on ``base`` (+ ``under`` merged) and save it as a peft folder at ``out``."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA training needs peft: pip install '.[train]'") from exc
    model = with_modules(base, under)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                        modules_to_save=[_head_name(model)] if train_head else None)
    peft_model = get_peft_model(model, config)
    losses = train_groups(peft_model, tokenizer, groups, settings)
    peft_model.save_pretrained(str(out))
    return losses


def train_sftm(base: torch.nn.Module, tokenizer, groups: Sequence[Group], settings: TrainSettings, density: float,
               under: Sequence[Module] = (), full_lr: float = 3e-5,
               frozen: Sequence[str] = ()) -> tuple[dict[str, Sparse], list[float]]:
    """Two-phase sparse fine-tuning; returns the sparse difference to ``base + under`` and the losses.

    ``frozen``: parameter names never trained (e.g. the word embeddings of a vocabulary-restricted base).
    """
    start = with_modules(base, under)
    reference = {n: p.detach().clone() for n, p in start.named_parameters() if n not in frozen}
    full = copy.deepcopy(start)
    for name, p in full.named_parameters():
        p.requires_grad_(name not in frozen)
    train_groups(full, tokenizer, groups, TrainSettings(**{**settings.__dict__, "lr": full_lr}))
    chosen = sparse_difference(reference, dict(full.named_parameters()), density)
    del full
    # phase 2: from the start point, train only the chosen weights
    params = dict(start.named_parameters())
    masks = {}
    for name, p in params.items():
        p.requires_grad_(name in chosen)
        if name in chosen:
            mask = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
            mask[chosen[name].index] = True
            masks[name] = mask.view_as(p)

    def keep_masked() -> None:
        for name, mask in masks.items():
            if params[name].grad is not None:
                params[name].grad.mul_(mask)

    losses = train_groups(start, tokenizer, groups, settings, after_backward=keep_masked)
    out = {}
    for name, sparse in chosen.items():
        diff = (params[name].detach().float() - reference[name].float()).flatten()
        out[name] = Sparse(sparse.index, diff[sparse.index])
    return out, losses


def _head_name(model: torch.nn.Module) -> str:
    return "classifier" if hasattr(model, "classifier") else "head"


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
