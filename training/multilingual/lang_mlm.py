"""Language modules for the e5 cross-encoder: masked-language-model LoRA per language, the ranking module on top.

As in the seed paper (Litschko et al.; MAD-X): each language module is a LoRA trained with masked-language
modelling on that language's own text (no labels); the ranking module is trained with the module of each
batch's language merged in (frozen), so at inference ``base + language module + ranking module`` is what was
trained, and a language without ranking data still gets its own language module (zero-shot).

The e5 file has no MLM head: the decoder here is the frozen word-embedding matrix restricted to the
vocabulary the texts use (``kept`` ids), under a fresh dense + GELU + LayerNorm transform that is trained and
thrown away. Only the LoRA deltas are kept (``peft`` folders, loaded as :class:`Module`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
from pathlib import Path
from typing import Mapping, Sequence

import torch

from pipeline.scorers.language_modules import Module, _apply
from pipeline.scorers.modular import pair_logits
from training.language_modules.trainer import LORA_TARGETS, TrainSettings

logger = logging.getLogger(__name__)
_PEFT_BASE = "base_model.model."


def language_texts(entry: dict) -> list[str]:
    """A language's own text for its module: sentences of the articles outside the held-out ones, training questions."""
    heldout_articles = {entry["answer"][q].split("-")[0] for q in entry["split"]["heldout"]}
    texts = [t for sid, t in sorted(entry["sentences"].items()) if sid.split("-")[0] not in heldout_articles]
    return texts + [entry["questions"][q] for q in entry["split"]["train"]]


def train_mlm_module(base: torch.nn.Module, tokenizer, texts: Sequence[str], out: Path, kept: Sequence[int],
                     rank: int = 8, epochs: int = 2, lr: float = 1e-3, batch: int = 64, max_length: int = 128,
                     mask_share: float = 0.15, seed: int = 13) -> list[float]:
    """Train a LoRA on ``base`` (a mean-pool scorer) with MLM over ``texts``; save the peft folder at ``out``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    rng = random.Random(seed)
    device = next(base.parameters()).device
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                           target_modules=list(LORA_TARGETS)))
    encoder = model.base_model.model.encoder
    hidden = encoder.config.hidden_size
    kept_ids = torch.tensor(sorted(set(kept)), device=device)
    to_kept = torch.full((encoder.config.vocab_size,), -100, dtype=torch.long, device=device)
    to_kept[kept_ids] = torch.arange(len(kept_ids), device=device)
    transform = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
                                    torch.nn.LayerNorm(hidden, eps=encoder.config.layer_norm_eps)).to(device)
    bias = torch.nn.Parameter(torch.zeros(len(kept_ids), device=device))
    params = [p for p in model.parameters() if p.requires_grad] + list(transform.parameters()) + [bias]
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=device)
    mask_id = tokenizer.mask_token_id
    order = list(range(len(texts)))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    losses = []
    model.train()
    for _ in range(epochs):
        rng.shuffle(order)
        total, count = 0.0, 0
        for i in range(0, len(order), batch):
            enc = tokenizer([texts[j] for j in order[i:i + batch]], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt").to(device)
            ids = enc["input_ids"]
            can = enc["attention_mask"].bool() & ~torch.isin(ids, special)
            chosen = can & (torch.rand(ids.shape, device=device) < mask_share)
            if not chosen.any():
                continue
            labels = torch.where(chosen, to_kept[ids], torch.full_like(ids, -100))
            random_ids = kept_ids[torch.randint(len(kept_ids), ids.shape, device=device)]
            inputs = torch.where(chosen, torch.full_like(ids, mask_id) if mask_id is not None else random_ids, ids)
            with autocast:
                states = encoder(input_ids=inputs, attention_mask=enc["attention_mask"]).last_hidden_state[chosen]
                emb = encoder.embeddings.word_embeddings.weight[kept_ids]
                logits = transform(states).float() @ emb.float().t() + bias
            loss = torch.nn.functional.cross_entropy(logits, labels[chosen])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total, count = total + float(loss.detach()), count + 1
        losses.append(total / max(count, 1))
    model.save_pretrained(str(out))
    logger.info("language module %s: %d texts, losses %s", Path(out).name, len(texts), losses)
    return losses


@contextlib.contextmanager
def merged(params: Mapping[str, torch.Tensor], module: Module | None):
    """``module``'s deltas added to ``params`` (names as in the bare model) for the block, restored exactly after."""
    undo = []
    with torch.no_grad():
        if module is not None:
            undo = [_apply(params[name], delta) for name, delta in module.deltas.items()]
    try:
        yield
    finally:
        with torch.no_grad():
            for param, index, original in reversed(undo):
                if index is None:
                    param.copy_(original)
                else:
                    param.view(-1).index_copy_(0, index, original)


def train_ranking_over_languages(base: torch.nn.Module, tokenizer, groups: Mapping[str, list], modules: Mapping[str, Module],
                                 settings: TrainSettings, out: Path, rank: int = 16) -> list[float]:
    """A ranking LoRA (+ head) trained with each batch's language module merged in; batches are one language each."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                           target_modules=list(LORA_TARGETS), modules_to_save=["head"]))
    named = dict(model.named_parameters())
    # the language modules name the bare model's weights; under peft a wrapped layer's weight is `<layer>.base_layer.weight`
    params = {}
    for module in modules.values():
        for name in module.deltas:
            layer = name.removesuffix(".weight")
            params[name] = named.get(f"{_PEFT_BASE}{layer}.base_layer.weight", named.get(f"{_PEFT_BASE}{name}"))
    batches = [(lang, groups[lang][i:i + settings.batch_questions])
               for lang in groups for i in range(0, len(groups[lang]), settings.batch_questions)]
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.0)
    steps = settings.epochs * len(batches)
    warmup = max(1, int(steps * settings.warmup_share))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup + 1))))
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    losses = []
    model.train()
    for _ in range(settings.epochs):
        rng.shuffle(batches)
        total = 0.0
        for lang, batch in batches:
            size = len(batch[0][1])
            enc = tokenizer([q for q, docs in batch for _ in docs], [d for _, ds in batch for d in ds],
                            truncation="longest_first", max_length=settings.max_length, padding=True,
                            return_tensors="pt").to(device)
            with merged(params, modules.get(lang)):
                with autocast:
                    logits = pair_logits(model(**enc)).float().view(len(batch), size)
                loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long, device=device))
                optim.zero_grad(set_to_none=True)
                loss.backward()
            optim.step()  # outside the merge: the base weights are frozen, only the LoRA and head move
            sched.step()
            total += float(loss.detach())
        losses.append(total / max(len(batches), 1))
        logger.info("ranking over language modules: loss %.4f", losses[-1])
    model.eval()
    model.save_pretrained(str(out))
    return losses
