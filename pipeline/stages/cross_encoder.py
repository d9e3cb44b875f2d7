"""``type: cross_encoder``: rerank the top-N candidates with a trained cross-encoder.

A config + builder of :class:`~pipeline.stages.rerank.RerankStage`: the scoring engine is
:class:`~pipeline.scorers.cross_encoder.CrossEncoderScorer` (truncation, batching, precision; one per
process and model, shared by pipelines), behind :class:`~pipeline.scorers.served.ServedScorer`
(time budget, micro-batching); passages (``title + " " + text``) come from the collection's
document store. With ``fail_open: true`` a timeout keeps the first-stage order and reports the
stage as ``degraded``.

Config::

    - {type: cross_encoder, name: ce, model: ce-minilm, top_n: 100, time_budget_ms: 30000, interpolate: 0.5}
"""

from __future__ import annotations

import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.core.build_context import BuildContext, register_stage
from pipeline.core.config import StageConfig
from pipeline.core.errors import IndexNotFoundError
from pipeline.runtime.micro_batch import MicroBatcher
from pipeline.scorers.cross_encoder import CrossEncoderOptions, CrossEncoderScorer
from pipeline.scorers.passages import Passages
from pipeline.scorers.served import ServedScorer
from pipeline.stages.rerank import RerankStage
from pipeline.storage.docstore import FILENAME as DOCSTORE
from pipeline.storage.docstore import DocStore
from pipeline.storage.index_store import index_dir

logger = logging.getLogger(__name__)


class CrossEncoderConfig(StageConfig):
    type: str = "cross_encoder"
    model: str = "ce-minilm"
    """Folder under the models directory (``$SEARCH_MODELS_DIR``), or a path."""
    top_n: int = Field(default=100, ge=1, le=1000)
    max_length: int = Field(default=384, ge=16, le=512)
    query_max_tokens: int = Field(default=64, ge=1, le=256)
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    """Pairs per forward pass; None: 8 on a CPU (small length-sorted batches ran 1.2-1.3x faster there than 32-64,
    2026-11-28), 512 on a GPU (the measured H200 configuration)."""
    batch_tokens: int | None = Field(default=None, ge=512)
    """Padded tokens per forward pass at most; None: ``batch_size`` x 512."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto"
    threads: int | None = Field(default=None, ge=1, le=256)
    compile: bool = False
    """``torch.compile`` the forward pass, at load time (the stage warms it up): on an H200 +9-15% end to end
    (README, GPU throughput); on a CPU with VNNI, int8 1.2-1.26x faster than eager (3.1x ``CrossEncoder.predict``,
    results/2026-11-28-ce-cpu-zen4) after about 30 s of compilation; needs a C++ compiler on a CPU."""
    pad_multiple: int = Field(default=8, ge=1, le=512)
    """Padded widths are multiples of this (64 with ``compile``: fewer shapes to compile)."""
    packing: Literal["auto", "on", "off"] = "auto"
    """Padding-free forward passes (one stream of real tokens per batch, attention per pair): auto = on a CUDA
    device where this torch has variable-length attention and a load-time self-check passes; off on a CPU."""
    packed_tokens: int = Field(default=131072, ge=512)
    """Real tokens per packed forward pass at most."""
    passage_cache: int | None = Field(default=None, ge=0)
    """Passages whose token ids are kept across requests (LRU, keyed by text); None: 100,000 on a GPU, 0 on a CPU."""
    time_budget_ms: float | None = Field(default=None, gt=0)
    """Per query of the batch; past it the stage raises (and fails open if ``fail_open``)."""
    micro_batch: bool = True
    micro_batch_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    micro_batch_max_pairs: int = Field(default=1024, ge=1)
    prune_layer: int | None = Field(default=None, ge=0, le=48)
    """Token pruning (padded path, i.e. the CPU): from this encoder layer on only the query segment and the
    ``prune_keep`` share of the passage tokens the query attends to most go on; the others leave the encoder.
    None: off. results/2026-12-04-rerank-cost measures it ("Token pruning")."""
    prune_keep: float = Field(default=1.0, gt=0.0, le=1.0)
    prune_min: int = Field(default=0, ge=0, le=512)
    """Passage tokens never pruned below this count: a passage of at most ``prune_min`` tokens is read whole."""
    interpolate: float | None = Field(default=None, ge=0.0, le=1.0)
    """``alpha``: final = alpha * minmax(reranker) + (1 - alpha) * minmax(incoming score), per query over the
    reranked candidates (None: the reranker alone). Tune it on a dev split:
    ``python -m training cross-encoder interpolate``."""



def docstore_path(ctx: BuildContext) -> Path:
    """The collection's document store, published with its indexes (the current version's file)."""
    for name in ctx.config.indexes:
        path = (index_dir(ctx.index_root, ctx.collection, name) / "current").resolve() / DOCSTORE
        if path.is_file():
            return path
    raise IndexNotFoundError(f"no document store for collection {ctx.collection!r} under {ctx.index_root}: "
                             f"run `python -m indexer build --dataset <dir>` first")


_ENGINE_FIELDS = {f.name for f in fields(CrossEncoderOptions)}


def engine_options(cfg: CrossEncoderConfig, device: str) -> CrossEncoderOptions:
    """The engine's options from the stage config (the fields both declare), on ``device``."""
    return CrossEncoderOptions(**{**cfg.model_dump(include=_ENGINE_FIELDS), "device": device})


def _build(cfg: CrossEncoderConfig, ctx: BuildContext) -> RerankStage:
    folder = Path(cfg.model) if os.path.isabs(cfg.model) else Path(ctx.models_dir) / cfg.model
    device = cfg.device if cfg.device != "auto" else (ctx.device or "auto")
    key = ("cross_encoder", str(folder.resolve()), device, cfg.precision, cfg.max_length, cfg.query_max_tokens,
           cfg.batch_size, cfg.batch_tokens, cfg.compile, cfg.pad_multiple, cfg.packing, cfg.packed_tokens, cfg.passage_cache,
           cfg.prune_layer, cfg.prune_keep, cfg.prune_min)

    def load():
        engine = CrossEncoderScorer(folder, engine_options(cfg, device))
        if cfg.compile:  # compile at load (tens of seconds on a CPU), not inside the first request's time budget
            logger.info("cross-encoder %s compiled in %.1f s", folder, engine.warm_up())
        batcher = MicroBatcher(engine.score_encoded, max_items=cfg.micro_batch_max_pairs,
                               max_wait_ms=cfg.micro_batch_wait_ms, name=f"ce-batcher-{folder.name}")
        return engine, batcher

    engine, batcher = ctx.shared(key, load)  # one model and one batcher per process, shared by pipelines
    path = docstore_path(ctx)  # keyed by the versioned file: a reload to a new index version gets a new store
    docs = ctx.shared(("docstore", str(path)), lambda: DocStore(path))
    scorer = ServedScorer(engine, batcher if cfg.micro_batch else None, cfg.time_budget_ms)
    return RerankStage(scorer, Passages(docs), top_n=cfg.top_n, interpolate=cfg.interpolate, name="ce")


register_stage("cross_encoder", CrossEncoderConfig, _build)
