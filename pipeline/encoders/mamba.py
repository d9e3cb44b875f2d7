"""A Mamba bi-encoder (after "Mamba Retriever"), built on transformers' ``MambaModel``.

No pretrained Mamba checkpoint exists on these machines, so the model is trained here: it
reuses MiniLM's WordPiece tokenizer (and starts from its word embeddings), is distilled from
MiniLM on corpus text, then fine-tuned contrastively (``python -m training mamba``). Texts are
right-padded, so a causal model's real tokens never see padding; the embedding is the mean of
the last hidden states over real tokens, L2-normalised like MiniLM's own output (so that the
distillation's MSE to the unit-length teacher vectors is a cosine regression).

The selective scan runs on transformers' pure-PyTorch path; with the ``mambapy`` package
installed (``train`` extra) it uses mamba.py's parallel scan instead of a Python loop over
positions. The CUDA kernels of ``mamba-ssm`` are used only if they are installed.

A model directory holds ``encoder.json`` (``{"kind": "mamba", ...}``), ``config.json`` (a
``MambaConfig``), ``model.safetensors`` and the tokenizer.

Example::

    enc = load(Path("models/mamba-minilm"), device="cpu")
    vecs = enc.encode_queries(["what is lava"])
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.encoders.bi_encoders import ENCODER_JSON, weights_checksum
from pipeline.encoders.moe import ModuleEncoder, mean_pool

WEIGHTS = "model.safetensors"


def parallel_scan_available() -> bool:
    """True when mamba.py's parallel scan (package ``mambapy``) can replace the sequential loop."""
    return importlib.util.find_spec("mambapy") is not None


def build_mamba_module(config: Any, tokenizer: Any):
    """A bi-encoder module around ``MambaModel(config)``: ``tokenize`` and ``forward(features)``."""
    import torch.nn as nn
    from transformers import MambaModel

    config.use_mambapy = parallel_scan_available()

    class MambaBiEncoder(nn.Module):
        """Mamba + masked mean pooling + L2 norm; ``forward(features)`` as sentence-transformers losses expect."""

        def __init__(self):
            super().__init__()
            self.mamba = MambaModel(config)
            self.tokenizer = tokenizer

        @property
        def dim(self) -> int:
            return int(self.mamba.config.hidden_size)

        def tokenize(self, texts: list[str], max_length: int, domain: str | None = None) -> dict[str, Any]:
            return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                                       pad_to_multiple_of=32, return_tensors="pt",
                                       return_token_type_ids=False))

        def forward(self, features: dict[str, Any]) -> dict[str, Any]:
            mask = features["attention_mask"]
            tokens = self.mamba(input_ids=features["input_ids"], attention_mask=mask, use_cache=False).last_hidden_state
            pooled = nn.functional.normalize(mean_pool(tokens, mask), dim=-1)
            return {"token_embeddings": tokens, "sentence_embedding": pooled}

        def __getitem__(self, index: int):
            """``module[0]`` is the backbone (sentence-transformers' cached losses inspect it)."""
            if index != 0:
                raise IndexError(index)
            return self.mamba

        def save(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
            from safetensors.torch import save_file

            folder = Path(folder)
            folder.mkdir(parents=True, exist_ok=True)
            self.mamba.config.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
            state = {k: v.detach().cpu().contiguous() for k, v in self.mamba.state_dict().items()}
            save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
            meta = {"kind": "mamba", "pooling": "mean", **(extra or {})}
            (folder / ENCODER_JSON).write_text(json.dumps(meta, indent=2))

    return MambaBiEncoder()


def new_mamba_module(tokenizer_dir: Path, hidden_size: int = 384, num_layers: int = 6, state_size: int = 16,
                     embeddings_from: Any | None = None):
    """A freshly initialised Mamba bi-encoder using ``tokenizer_dir``'s tokenizer.

    ``embeddings_from``: a ``(vocab, hidden_size)`` tensor to start the word embeddings from
    (MiniLM's, so that distillation starts from meaningful token vectors).
    """
    from transformers import AutoTokenizer, MambaConfig

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    config = MambaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                         state_size=state_size, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    module = build_mamba_module(config, tokenizer)
    if embeddings_from is not None:
        emb = module.mamba.get_input_embeddings().weight
        if tuple(embeddings_from.shape) != tuple(emb.shape):
            raise ConfigError(f"embeddings of shape {tuple(embeddings_from.shape)} do not fit {tuple(emb.shape)}")
        emb.data.copy_(embeddings_from)
    return module


def load_mamba_module(folder: Path):
    """The Mamba bi-encoder saved in ``folder``."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, MambaConfig

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise ConfigError(f"{folder}: no Mamba weights ({WEIGHTS})")
    module = build_mamba_module(MambaConfig.from_pretrained(str(folder)),
                                AutoTokenizer.from_pretrained(str(folder), local_files_only=True))
    missing, unexpected = module.mamba.load_state_dict(load_file(str(folder / WEIGHTS)), strict=False)
    if missing or unexpected:
        raise ConfigError(f"{folder}: weights do not match the Mamba config (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    return module.eval()


def load(path: Path, device: str | None = None) -> ModuleEncoder:
    """The Mamba encoder of a model folder written by ``python -m training mamba``."""
    path = Path(path)
    try:
        meta = json.loads((path / ENCODER_JSON).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path / ENCODER_JSON}: not a readable encoder.json ({exc})") from exc
    if meta.get("kind") != "mamba":
        raise ConfigError(f"{path / ENCODER_JSON}: kind is {meta.get('kind')!r}, expected 'mamba'")
    module = load_mamba_module(path)
    identity = f"mamba:{path.name}@sha256:{weights_checksum(path)[:16]}"
    return ModuleEncoder(module, identity, module.dim, device,
                         query_max_length=int(meta.get("query_max_length", 64)),
                         doc_max_length=int(meta.get("doc_max_length", 256)))
