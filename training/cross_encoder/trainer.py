"""The training loop: groups -> weighted ranking loss -> AdamW, dev nDCG@10 for early stopping.

Mixed precision (bf16 autocast) on a GPU, fp32 on the CPU. After every epoch the model reranks
the dev queries' BM25 top-``eval_depth`` and the best epoch by dev nDCG@10 is kept (a loss
that falls while ranking collapses is caught here, not in the loss curve).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from pipeline.scorers.tokenization import length_batches, pad_pairs, pair_token_ids
from training.cross_encoder.curriculum import Heuristic, group_weight, pair_weights
from training.cross_encoder.data.bundle import Bundle, BundleQuery
from training.cross_encoder.data.groups import Group, make_groups
from training.cross_encoder.losses import Loss, ranking_loss
from training.cross_encoder.ranking_metrics import ndcg_at_k

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every knob of one training run (the CLI fills it; enums are validated on construction)."""

    loss: Loss = Loss.LISTWISE
    negatives: int = 31
    rank_from: int = 1
    rank_to: int = 100
    retrievers: tuple[str, ...] = ("bm25",)
    curriculum: bool = True
    heuristic: Heuristic = Heuristic.RECIP
    anneal_fraction: float = 0.5
    """Weights reach uniform after this fraction of all steps (MacAvaney et al.'s ``m``)."""
    epochs: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    groups_per_batch: int = 8
    max_length: int = 384
    query_max_tokens: int = 64
    eval_depth: int = 100
    patience: int = 3
    seed: int = 13
    device: str = "auto"
    max_steps: int | None = None
    """Stop after this many steps (tiny CPU runs in tests)."""
    max_seconds: float | None = None
    """Stop taking steps after this many seconds of training, then evaluate and keep the best as usual
    (a lent GPU's call has a hard time limit: a run cut by ``timeout`` would leave nothing)."""
    base_model: str | None = None
    """Encoder folder to start from (default: the packaged all-MiniLM-L6-v2)."""
    init_model: str | None = None
    """A saved cross-encoder folder to continue from (encoder and head; domain adaptation), instead of a new head."""
    teacher: str = "none"
    """``hybrid``: add a KL term towards the zero-shot hybrid's (BM25 + MiniLM, z-score 0.6/0.4) softmax over
    each group, the strongest out-of-domain signal the project has (GPL-style soft labels); ``model``: towards a
    frozen cross-encoder's (``teacher_model``; knowledge distillation into a smaller student); ``none``: labels only."""
    teacher_model: str | None = None
    """The cross-encoder folder that scores each group when ``teacher == "model"`` (same tokenizer as the student)."""
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    label_weight: float = 1.0
    """Weight of the ranking loss on the labels (0 with a teacher: pure distillation)."""
    student_layers: int | None = None
    """Keep only this many of the starting model's transformer layers, evenly spaced, the last one always kept
    (a shallower, faster student to distil into; issue 23)."""

    def __post_init__(self):
        self.loss, self.heuristic = Loss(self.loss), Heuristic(self.heuristic)
        self.retrievers = tuple(self.retrievers)
        if self.negatives < 1 or self.epochs < 1 or self.groups_per_batch < 1:
            raise ValueError("negatives, epochs and groups_per_batch must be >= 1")
        if self.teacher not in ("none", "hybrid", "model"):
            raise ValueError(f"unknown teacher {self.teacher!r} (none, hybrid, model)")
        if (self.teacher == "model") != bool(self.teacher_model):
            raise ValueError("teacher 'model' and teacher_model go together (the teacher's cross-encoder folder)")
        if self.distill_temperature <= 0:
            raise ValueError("distill_temperature must be > 0")
        if self.label_weight < 0 or self.distill_weight < 0:
            raise ValueError("label_weight and distill_weight must be >= 0")
        if self.student_layers is not None and self.student_layers < 1:
            raise ValueError("student_layers must be >= 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(loss=self.loss.value, heuristic=self.heuristic.value, retrievers=list(self.retrievers))
        return d


@dataclass
class TrainResult:
    module: object
    tokenizer: object
    dev_history: list[float] = field(default_factory=list)
    best_epoch: int = 0
    best_dev: float = 0.0
    steps: int = 0
    seconds: float = 0.0
    cache: object = None


class TokenCache:
    """Word pieces of every query and document text, tokenized once (no special tokens)."""

    def __init__(self, tokenizer, texts: Sequence[str], max_length: int):
        texts = list(dict.fromkeys(texts))
        ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"] if texts else []
        self.ids = dict(zip(texts, ids, strict=True))
        self.tokenizer = tokenizer

    def pair(self, query: str, doc: str, max_length: int, query_max_tokens: int):
        t = self.tokenizer
        return pair_token_ids(self.ids[query], self.ids[doc], t.cls_token_id, t.sep_token_id, max_length, query_max_tokens)


def resolve_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def score_pairs(module, cache: TokenCache, pairs: Sequence[tuple[str, str]], cfg: TrainConfig, device: str,
                batch_size: int = 256) -> list[float]:
    """Scores of ``(query text, doc text)`` pairs with the module in eval mode."""
    import torch

    encoded = [cache.pair(q, d, cfg.max_length, cfg.query_max_tokens) for q, d in pairs]
    scores = [0.0] * len(encoded)
    was_training = module.training
    module.eval()
    with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        for batch in length_batches([len(e[0]) for e in encoded], batch_size, batch_size * cfg.max_length):
            ids, types, mask = pad_pairs([encoded[i] for i in batch], cache.tokenizer.pad_token_id, torch, device)
            for i, s in zip(batch, module(ids, types, mask).float().cpu().tolist(), strict=True):
                scores[i] = s
    module.train(was_training)
    return scores


def rerank_ndcg(module, cache: TokenCache, docs: dict[str, str], queries: Sequence[BundleQuery],
                first_stage: dict[str, list[tuple[str, float]]], cfg: TrainConfig, device: str, depth: int) -> float:
    """nDCG@10 of reranking each query's ``first_stage`` top-``depth``."""
    run = rerank_scores(module, cache, docs, queries, first_stage, cfg, device, depth)
    return ndcg_at_k({q.qid: q.qrels for q in queries}, run)


def rerank_scores(module, cache: TokenCache, docs: dict[str, str], queries: Sequence[BundleQuery],
                  first_stage: dict[str, list[tuple[str, float]]], cfg: TrainConfig, device: str,
                  depth: int) -> dict[str, dict[str, float]]:
    """The reranker's raw score of each query's ``first_stage`` top-``depth`` documents."""
    pairs, owners = [], []
    for q in queries:
        for doc, _ in first_stage[q.qid][:depth]:
            pairs.append((q.text, docs[doc]))
            owners.append((q.qid, doc))
    scores = score_pairs(module, cache, pairs, cfg, device)
    run: dict[str, dict[str, float]] = {q.qid: {} for q in queries}
    for (qid, doc), s in zip(owners, scores, strict=True):
        run[qid][doc] = s
    return run


def _batch_tensors(groups: Sequence[Group], queries: dict[str, BundleQuery], docs: dict[str, str], cache: TokenCache,
                   cfg: TrainConfig, device: str):
    import torch

    rows = []
    for g in groups:
        q = queries[g.qid].text
        for c in (g.positive, *g.negatives):
            rows.append(cache.pair(q, docs[c.doc_id], cfg.max_length, cfg.query_max_tokens))
    return pad_pairs(rows, cache.tokenizer.pad_token_id, torch, device)


def hybrid_teacher(queries: Sequence[BundleQuery]) -> dict[str, tuple[dict[str, float], float]]:
    """Per query: the zero-shot hybrid's fused score of every listed document, and the floor for the others."""
    from pipeline.core.score_fusion import linear_fusion

    out = {}
    for q in queries:
        scores = linear_fusion([q.bm25[:100], q.dense[:100]], [0.6, 0.4], "zscore")
        out[q.qid] = (scores, min(scores.values()) if scores else 0.0)
    return out


def distill_loss(scores, batch: Sequence[Group], teacher: dict, temperature: float):
    """KL(teacher softmax || student softmax) over each group (positive first, as ``scores``)."""
    import torch

    rows = []
    for g in batch:
        table, floor = teacher[g.qid]
        rows.append([table.get(c.doc_id, floor) for c in (g.positive, *g.negatives)])
    return kl_to_teacher(scores, torch.tensor(rows, device=scores.device, dtype=torch.float32), temperature)


def kl_to_teacher(scores, teacher_scores, temperature: float):
    """KL(softmax(teacher / T) || softmax(student / T)) per group, times T^2 (Hinton et al.), batch mean."""
    import torch.nn.functional as F

    t = float(temperature)
    target = F.softmax(teacher_scores.float() / t, dim=-1)
    return F.kl_div(F.log_softmax(scores.float() / t, dim=-1), target, reduction="batchmean") * (t * t)


def keep_layers(module, n: int) -> list[int]:
    """Cut the module's encoder to ``n`` of its layers, evenly spaced with the last kept; returns their indices."""
    import torch

    layers = module.encoder.encoder.layer
    total = len(layers)
    if n > total:
        raise ValueError(f"student_layers {n} > the model's {total} layers")
    kept = sorted({round((i + 1) * total / n) - 1 for i in range(n)})
    module.encoder.encoder.layer = torch.nn.ModuleList([layers[i] for i in kept])
    module.encoder.config.num_hidden_layers = len(kept)
    return kept


def train(cfg: TrainConfig, bundle: Bundle, log_every: int = 20) -> TrainResult:
    """Train on the bundle's ``train`` queries, early-stop on its ``dev`` queries; returns the best epoch's model."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from pipeline.scorers.cross_encoder_folder import read_module
    from training.cross_encoder.model import new_model

    device = resolve_device(cfg.device)
    rng = random.Random(cfg.seed)
    module, tokenizer = read_module(cfg.init_model) if cfg.init_model else new_model(cfg.base_model, seed=cfg.seed)
    if cfg.student_layers:
        logger.info("student: layers %s of the starting model", keep_layers(module, cfg.student_layers))
    module.to(device).train()
    teacher_module = None
    if cfg.teacher == "model":
        teacher_module, teacher_tok = read_module(cfg.teacher_model)
        if teacher_tok.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"the teacher {cfg.teacher_model} does not share the student's tokenizer")
        teacher_module.to(device).eval().requires_grad_(False)
    train_q, dev_q = bundle.role("train"), bundle.role("dev")
    if not train_q:
        raise ValueError("the bundle has no train queries")
    queries = {q.qid: q for q in bundle.queries}
    needed = {bundle.docs[d] for q in bundle.queries for d, _ in (*q.bm25, *q.dense) if d in bundle.docs}
    needed |= {bundle.docs[d] for q in bundle.queries for d in q.qrels if d in bundle.docs}
    cache = TokenCache(tokenizer, [q.text for q in bundle.queries] + sorted(needed), cfg.max_length)
    missing = {d for q in train_q for d in q.positives if d not in bundle.docs}
    if missing:
        raise ValueError(f"{len(missing)} positive documents are missing from the bundle, e.g. {sorted(missing)[:3]}")

    per_epoch = -(-len(make_groups(train_q, cfg.negatives, cfg.rank_from, cfg.rank_to, cfg.retrievers, random.Random(0)))
                  // cfg.groups_per_batch)
    if per_epoch == 0:
        raise ValueError("no training groups: are there positives and enough negatives in the rank range?")
    total = min(per_epoch * cfg.epochs, cfg.max_steps or per_epoch * cfg.epochs)
    anneal_steps = int(cfg.anneal_fraction * total) if cfg.curriculum else 0
    optim = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(optim, int(cfg.warmup_fraction * total), total)
    result = TrainResult(module, tokenizer)
    best_state, since_best, step, start = None, 0, 0, time.perf_counter()
    dev_lists = {q.qid: q.bm25 for q in dev_q}
    teacher = hybrid_teacher(train_q) if cfg.teacher == "hybrid" else None
    for epoch in range(1, cfg.epochs + 1):
        groups = make_groups(train_q, cfg.negatives, cfg.rank_from, cfg.rank_to, cfg.retrievers, rng)
        rng.shuffle(groups)
        for i in range(0, len(groups), cfg.groups_per_batch):
            if step >= total:
                break
            if cfg.max_seconds and time.perf_counter() - start > cfg.max_seconds:
                logger.info("time budget of %.0f s reached at step %d of %d", cfg.max_seconds, step, total)
                total = step
                break
            batch = groups[i : i + cfg.groups_per_batch]
            ids, types, mask = _batch_tensors(batch, queries, bundle.docs, cache, cfg, device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                scores = module(ids, types, mask).view(len(batch), 1 + cfg.negatives)
                if teacher_module is not None:
                    with torch.no_grad():
                        target = teacher_module(ids, types, mask).view(len(batch), 1 + cfg.negatives)
            if cfg.loss is Loss.POINTWISE:
                w = torch.tensor([pair_weights(g, step, anneal_steps, cfg.heuristic) for g in batch], device=device)
            else:
                w = torch.tensor([group_weight(g, step, anneal_steps, cfg.heuristic) for g in batch], device=device)
            loss = cfg.label_weight * ranking_loss(cfg.loss, scores, w)
            if teacher is not None:
                loss = loss + cfg.distill_weight * distill_loss(scores, batch, teacher, cfg.distill_temperature)
            if teacher_module is not None:
                loss = loss + cfg.distill_weight * kl_to_teacher(scores, target, cfg.distill_temperature)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            step += 1
            if step % log_every == 0:
                logger.info("epoch %d step %d/%d loss %.4f", epoch, step, total, loss.item())
        dev = rerank_ndcg(module, cache, bundle.docs, dev_q, dev_lists, cfg, device, cfg.eval_depth) if dev_q else 0.0
        result.dev_history.append(dev)
        logger.info("epoch %d: dev nDCG@10 %.4f (%.0f s)", epoch, dev, time.perf_counter() - start)
        if best_state is None or dev > result.best_dev or not dev_q:  # no dev queries: keep the last epoch
            result.best_dev, result.best_epoch, since_best = dev, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        else:
            since_best += 1
        if since_best >= cfg.patience or step >= total:
            break
    module.load_state_dict(best_state)
    result.steps, result.seconds = step, time.perf_counter() - start
    result.cache = cache
    return result


def evaluate_report(result: TrainResult, cfg: TrainConfig, bundle: Bundle, first_stages: dict[str, dict[str, list]],
                    depth: int = 100, dump: Path | None = None) -> dict[str, float]:
    """nDCG@10 of the trained model reranking each named first stage of an eval bundle (reporting only).

    ``dump``: also write ``{stage: {qid: [[doc, first-stage score, reranker score], ...]}}`` there (JSON),
    so blends can be studied afterwards without the GPU.
    """
    device = resolve_device(cfg.device)
    texts = [q.text for q in bundle.queries] + sorted({bundle.docs[d] for lists in first_stages.values()
                                                        for ranking in lists.values() for d, _ in ranking[:depth]})
    cache = TokenCache(result.tokenizer, texts, cfg.max_length)
    out, dumped = {}, {}
    qrels = {q.qid: q.qrels for q in bundle.queries}
    # the stages' lists overlap (BM25, RRF and z-score hybrids of the same two lists): each pair is scored once
    union = {q.qid: list({d: 0.0 for lists in first_stages.values() for d, _ in lists[q.qid][:depth]}.items())
             for q in bundle.queries}
    scored = rerank_scores(result.module, cache, bundle.docs, bundle.queries, union, cfg, device, depth * len(first_stages))
    for name, lists in first_stages.items():
        out[f"{name}_first_stage"] = ndcg_at_k(qrels, {qid: dict(r[:depth]) for qid, r in lists.items()})
        run = {qid: {d: scored[qid][d] for d, _ in lists[qid][:depth]} for qid in lists}
        out[f"{name}>>ce"] = ndcg_at_k(qrels, run)
        dumped[name] = {qid: [[d, s, run[qid][d]] for d, s in lists[qid][:depth]] for qid in run}
    if dump is not None:
        dump.parent.mkdir(parents=True, exist_ok=True)
        dump.write_text(json.dumps({"qrels": qrels, "stages": dumped}))
    return out
