"""The FIRST training loop: LoRA (or full) fine-tuning on teacher-ranked windows.

Each example is one prompt (query + m labelled passages, assistant turn opened with
``[``) followed by the teacher permutation ``B] > [A] > ...<eos>``. With left padding every
sequence ends at the same position, so one forward pass with ``logits_to_keep = L + 1``
gives both the first-token logits (position 0: FIRST's ranking loss over the identifier
tokens) and the next-token logits of the whole permutation (the language-modelling loss).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pipeline.scorers.listwise import ListwisePrompt, identifier_token_ids, left_pad
from pipeline.scorers.permutation import format_permutation
from training.listwise.data import TrainWindow
from training.listwise.loss import listnet, lm_loss, weighted_ranknet

RANK_LOSSES = ("ranknet", "listnet")

logger = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainSettings:
    epochs: float = 1.0
    batch_size: int = 8
    lr: float = 2e-4
    warmup: float = 0.05
    rank_weight: float = 1.0
    """Weight of FIRST's ranking loss on the first-token logits."""
    rank_loss: str = "ranknet"
    """``ranknet`` (the paper's weighted pairwise loss on teacher ranks) or ``listnet`` (teacher scores)."""
    temperature: float = 1.0
    """Softmax temperature of the teacher scores for ``listnet``."""
    lm_weight: float = 1.0
    """Weight of the language-modelling loss on the full permutation (0 disables it)."""
    lora_r: int = 16
    """LoRA rank; 0 means full fine-tuning."""
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    passage_tokens: int = 80
    query_tokens: int = 48
    max_steps: int = 0
    max_seconds: float = 0.0
    """Stop early (and keep what was learnt) after this many seconds; 0: no limit."""
    seed: int = 0
    log_every: int = 20
    eval_every: int = 0
    """Evaluate the dev windows every this many steps and keep the weights with the lowest dev ranking
    loss (restored at the end); 0: evaluate once, after the last step."""


@dataclass
class TrainReport:
    steps: int = 0
    examples: int = 0
    seconds: float = 0.0
    losses: list[dict[str, float]] = field(default_factory=list)
    dev: dict[str, float] = field(default_factory=dict)
    dev_curve: list[dict[str, float]] = field(default_factory=list)
    """``eval_every``: the dev metrics at each evaluation (with ``step``); ``dev`` is the kept one."""


class Encoded:
    """Token ids of prompts and targets, computed once before the loop."""

    def __init__(self, tokenizer: Any, windows: Sequence[TrainWindow], settings: TrainSettings):
        prompt = ListwisePrompt(tokenizer, settings.passage_tokens, settings.query_tokens)
        self.prompts = prompt.encode([(w.query, w.passages) for w in windows])
        eos = tokenizer.eos_token_id
        self.targets = [tokenizer.encode(format_permutation(w.teacher_order)[1:], add_special_tokens=False) + [eos]
                        for w in windows]
        self.ranks = [w.teacher_rank for w in windows]
        self.teacher_scores = [w.teacher_score for w in windows]
        if settings.rank_loss not in RANK_LOSSES:
            raise ValueError(f"rank_loss must be one of {RANK_LOSSES}, got {settings.rank_loss!r}")
        if settings.rank_loss == "listnet" and any(s is None for s in self.teacher_scores):
            raise ValueError("the listnet loss needs teacher scores in every window")
        self.rank_loss, self.temperature = settings.rank_loss, settings.temperature
        width = max(len(r) for r in self.ranks)
        self.label_ids = identifier_token_ids(tokenizer, width)

    def batches(self, batch_size: int, rng: random.Random) -> list[list[int]]:
        """Shuffled batches whose examples share the target length (one window size each)."""
        by_len: dict[int, list[int]] = {}
        for i, t in enumerate(self.targets):
            by_len.setdefault(len(t), []).append(i)
        out = []
        for idx in by_len.values():
            rng.shuffle(idx)
            out += [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
        rng.shuffle(out)
        return out


def batch_losses(model: Any, enc: Encoded, idx: Sequence[int], pad_id: int, device: Any) -> dict[str, Any]:
    """``{"rank", "lm", "scores"}`` of one batch (every row has the same target length)."""
    import torch

    seqs = [enc.prompts[i] + enc.targets[i] for i in idx]
    target_len = len(enc.targets[idx[0]])
    input_ids, mask, positions = left_pad(seqs, pad_id, device)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                   use_cache=False, logits_to_keep=target_len + 1).logits
    m = len(enc.ranks[idx[0]])
    label_ids = torch.tensor(enc.label_ids[:m], device=logits.device)
    scores = logits[:, 0, :].index_select(-1, label_ids)
    targets = torch.tensor([enc.targets[i] for i in idx], device=logits.device)
    if enc.rank_loss == "listnet":
        teacher = torch.tensor([enc.teacher_scores[i] for i in idx], device=logits.device)
        rank = listnet(scores, teacher, enc.temperature)
    else:
        rank = weighted_ranknet(scores, torch.tensor([enc.ranks[i] for i in idx], device=logits.device))
    return {"rank": rank, "lm": lm_loss(logits[:, :target_len], targets), "scores": scores}


def wrap_model(model: Any, settings: TrainSettings) -> Any:
    """LoRA on every linear layer of the decoder (or the model itself for full fine-tuning)."""
    if settings.lora_r <= 0:
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise SystemExit(f"LoRA training needs the 'train' extra: pip install -e '.[train]' ({exc})") from exc
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def train(model: Any, tokenizer: Any, windows: Sequence[TrainWindow], settings: TrainSettings,
          dev: Sequence[TrainWindow] = (), device: str = "cpu") -> tuple[Any, TrainReport]:
    """Fine-tune ``model`` on ``windows``; returns the (peft) model and a report."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    model = wrap_model(model, settings).to(device)
    enc = Encoded(tokenizer, windows, settings)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    per_epoch = len(enc.batches(settings.batch_size, random.Random(0)))
    total = settings.max_steps or max(1, math.ceil(per_epoch * settings.epochs))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, int(total * settings.warmup), total)
    use_bf16 = str(device).startswith("cuda")
    report, start, step = TrainReport(examples=len(windows)), time.perf_counter(), 0
    best: tuple | None = None
    model.train()
    while step < total:
        for idx in enc.batches(settings.batch_size, rng):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                parts = batch_losses(model, enc, idx, pad_id, device)
            loss = settings.rank_weight * parts["rank"] + settings.lm_weight * parts["lm"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % settings.log_every == 0 or step == total:
                row = {"step": step, "loss": loss.item(), "rank": parts["rank"].item(), "lm": parts["lm"].item(),
                       "seconds": round(time.perf_counter() - start, 1)}
                report.losses.append(row)
                logger.info("step %d/%d %s", step, total, row)
            out_of_time = settings.max_seconds and time.perf_counter() - start > settings.max_seconds
            if out_of_time:
                logger.warning("time budget of %.0fs reached at step %d/%d", settings.max_seconds, step, total)
                total = step
            if dev and settings.eval_every and (step % settings.eval_every == 0 or step >= total):
                best = _keep_best(model, tokenizer, dev, settings, device, report, step, best)
            if step >= total:
                break
    report.steps, report.seconds = step, time.perf_counter() - start
    if best is not None:
        model.load_state_dict(best[1], strict=False)
        report.dev = dict(best[2])
        logger.info("kept the weights of step %d (dev %s)", best[0], report.dev)
    elif dev:
        report.dev = evaluate_windows(model, tokenizer, dev, settings, device)
    return model, report


def _keep_best(model: Any, tokenizer: Any, dev: Sequence[TrainWindow], settings: TrainSettings, device: str,
               report: TrainReport, step: int, best: tuple | None) -> tuple | None:
    """Evaluate ``dev`` now; returns (step, trainable weights on the CPU, metrics) of the best so far."""
    metrics = evaluate_windows(model, tokenizer, dev, settings, device)
    report.dev_curve.append({"step": step, **metrics})
    logger.info("dev at step %d: %s", step, metrics)
    if best is not None and metrics["dev_rank_loss"] >= best[2]["dev_rank_loss"]:
        return best
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    weights = {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items() if n in names}
    return step, weights, {**metrics, "step": step}


def evaluate_windows(model: Any, tokenizer: Any, windows: Sequence[TrainWindow], settings: TrainSettings,
                     device: str = "cpu") -> dict[str, float]:
    """Dev metrics: ranking loss and how often the top FIRST identifier is the teacher's best."""
    import torch

    enc = Encoded(tokenizer, windows, settings)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    losses, hits, n = [], 0, 0
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda")):
        for idx in enc.batches(settings.batch_size, random.Random(0)):
            parts = batch_losses(model, enc, idx, pad_id, device)
            losses.append(float(parts["rank"]) * len(idx))
            best = parts["scores"].float().argmax(-1).tolist()
            hits += sum(enc.ranks[i][b] == 0 for i, b in zip(idx, best, strict=True))
            n += len(idx)
    model.train()
    return {"dev_rank_loss": sum(losses) / max(n, 1), "dev_top1_agreement": hits / max(n, 1), "dev_windows": n}


def save_adapter(model: Any, out: Path, report: TrainReport, settings: TrainSettings, extra: dict[str, Any],
                 base_name: str = "smollm2-135m", tokenizer: Any = None) -> Path:
    """Write the LoRA delta in bfloat16 (compact) plus ``training.json``; full models as safetensors,
    with ``tokenizer`` beside them so that the folder loads as a base (``listwise`` stage ``base:``).

    The adapter config names the base by its portable name (``base_name``), not a local path.
    """
    import torch
    from safetensors.torch import load_file, save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if settings.lora_r > 0:
        model.save_pretrained(out)
        weights = out / "adapter_model.safetensors"
        state = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(weights)).items()}
        save_file(state, str(weights), metadata={"format": "pt"})
        config_path = out / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base_name
        config_path.write_text(json.dumps(config, indent=2))
    else:
        model.save_pretrained(out, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
    summary = {"settings": asdict(settings), "report": asdict(report), **extra}
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    return out
