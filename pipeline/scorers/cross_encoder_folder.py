"""The cross-encoder's folder format: the one reader and the one writer (serving, training, modules).

A folder is a sentence-transformers ``CrossEncoder``, so ``CrossEncoder(folder).predict`` loads it too:

* the BERT encoder and its tokenizer at the top (``config.json``, ``model.safetensors``, tokenizer files),
  in the dtype it was written in (bf16 for the trained models);
* ``1_Pooling/config.json``: mean pooling over the tokens the attention mask keeps;
* ``2_Dense/model.safetensors``: the linear head (``linear.weight`` ``(1, hidden)``, ``linear.bias``), in fp32.

:func:`read_module` gives the trainable module (:func:`mean_pool_scorer`, fp32), :func:`write_module`
writes one. :class:`~pipeline.scorers.cross_encoder.CrossEncoderScorer` reads its weights through
:func:`read_encoder` and :func:`read_head` and saves through :func:`write_module`; ``training/`` uses
:func:`read_module` and :func:`write_module`; :mod:`pipeline.scorers.modular` reads its base with them.

    module, tokenizer = read_module(Path("models/ce-minilm"))       # fp32, to train further or to score
    write_module(module, tokenizer, Path("out/ce"), dtype="bfloat16")
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from pipeline.core.errors import ModelNotFoundError
from pipeline.scorers.fast_bert import masked_mean

HEAD_FILE = Path("2_Dense") / "model.safetensors"
POOLING_FILE = Path("1_Pooling") / "config.json"
ENCODER_FILE = "model.safetensors"
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.base.modules.dense.Dense"},
]
TRANSFORMER_CONFIG = {"transformer_task": "feature-extraction",
                      "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                      "module_output_name": "token_embeddings"}
IDENTITY = "torch.nn.modules.linear.Identity"
PROVENANCE = ("MODEL_CARD.md", "training_report.json")
"""Files that describe how a model was made; :meth:`CrossEncoderScorer.save` copies them along."""


def is_cross_encoder(folder: Path) -> bool:
    """Whether ``folder`` holds an encoder config and a ``2_Dense`` head (this format)."""
    return (Path(folder) / "config.json").is_file() and (Path(folder) / HEAD_FILE).is_file()


def check_folder(folder: Path, build_hint: str) -> None:
    """Raise :class:`ModelNotFoundError` unless ``folder`` is a cross-encoder folder with mean pooling."""
    folder = Path(folder)
    if not is_cross_encoder(folder):
        raise ModelNotFoundError(f"no trained cross-encoder at {folder}: build it with {build_hint}")
    pooling_file = folder / POOLING_FILE
    pooling = json.loads(pooling_file.read_text()).get("pooling_mode", "mean") if pooling_file.is_file() else "mean"
    if pooling != "mean":
        raise ModelNotFoundError(f"{folder}: pooling {pooling!r} is not supported (expected mean)")


def read_encoder(folder: Path, attn_implementation: str | None = None):
    """The ``transformers`` encoder of a folder, in fp32 (bf16 weights are widened exactly)."""
    import torch
    from transformers import AutoModel

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModel.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True, **extra)


def read_head(folder: Path, hidden_size: int):
    """The linear head (``hidden_size`` -> 1) of a folder, in fp32."""
    import torch
    from safetensors.torch import load_file

    head = torch.nn.Linear(hidden_size, 1)
    state = load_file(str(Path(folder) / HEAD_FILE))
    head.load_state_dict({k.removeprefix("linear."): v.float() for k, v in state.items()})
    return head


def read_module(folder: Path, attn_implementation: str | None = None):
    """``(module, tokenizer)`` of a folder: :func:`mean_pool_scorer` in fp32 on the CPU, to train or score."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / HEAD_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not a cross-encoder folder (no {HEAD_FILE}): "
                                "train one with `python -m training cross-encoder train`")
    encoder = read_encoder(folder, attn_implementation)
    head = read_head(folder, encoder.config.hidden_size)
    return mean_pool_scorer(encoder, head), AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def stored_dtype(folder: Path) -> str:
    """The dtype the encoder's weights were written in (``"bfloat16"``, ``"float32"``...)."""
    from safetensors import safe_open

    with safe_open(str(Path(folder) / ENCODER_FILE), framework="pt") as f:
        code = f.get_slice(next(iter(f.keys()))).get_dtype()
    return {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}[code]


def write_module(module, tokenizer, folder: Path, dtype: str = "bfloat16") -> Path:
    """Write ``module`` (a :func:`mean_pool_scorer`: encoder in ``dtype``, head in fp32) and its tokenizer
    as a cross-encoder folder; returns ``folder``. The module itself is left as it was (a copy is cast)."""
    import copy

    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = copy.deepcopy(module.encoder).to("cpu", getattr(torch, dtype))
    encoder.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    hidden = encoder.config.hidden_size
    (folder / "modules.json").write_text(json.dumps(MODULES, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps(TRANSFORMER_CONFIG, indent=2))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"activation_fn": IDENTITY, "default_prompt_name": None, "model_type": "CrossEncoder", "prompts": {}}, indent=2))
    (folder / POOLING_FILE).parent.mkdir(exist_ok=True)
    (folder / POOLING_FILE).write_text(json.dumps(
        {"embedding_dimension": hidden, "pooling_mode": "mean", "include_prompt": True}, indent=2))
    (folder / HEAD_FILE).parent.mkdir(exist_ok=True)
    (folder / HEAD_FILE.parent / "config.json").write_text(json.dumps(
        {"in_features": hidden, "out_features": 1, "bias": True, "activation_function": IDENTITY,
         "module_input_name": "sentence_embedding", "module_output_name": "scores"}, indent=2))
    head = module.head
    save_file({"linear.weight": head.weight.detach().float().cpu().contiguous(),
               "linear.bias": head.bias.detach().float().cpu().contiguous()}, str(folder / HEAD_FILE))
    return folder


def weights_stamp(folder: Path) -> tuple:
    """``(size, mtime_ns)`` of the weight files: whether a folder changed since a scorer read it."""
    return tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in (Path(folder) / ENCODER_FILE, Path(folder) / HEAD_FILE)
                 if p.is_file())


@functools.cache
def _mean_pool_scorer_class():
    import torch

    class MeanPoolScorer(torch.nn.Module):
        """BERT encoder, masked mean pooling, linear head: one logit per pair."""

        def __init__(self, encoder, head):
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, input_ids, token_type_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, token_type_ids=token_type_ids,
                                  attention_mask=attention_mask).last_hidden_state
            return self.head(masked_mean(hidden, attention_mask)).squeeze(-1)

    return MeanPoolScorer


def mean_pool_scorer(encoder, head):
    """The module a folder holds (a ``torch.nn.Module``): shared by inference, training and the modular scorer."""
    return _mean_pool_scorer_class()(encoder, head)
