"""A mixture-of-experts bi-encoder whose feed-forward experts are chosen by the text's domain.

After "Contrastive Learning and Mixture of Experts Enables Precise Vector Embeddings": the
feed-forward block of each BERT layer (``intermediate`` + ``output``) is copied into one
expert per domain, all initialised from the base model (MiniLM); attention and embeddings
stay shared. Routing is enforced, not learned: every token of a text goes to the expert of the
text's domain (queries and documents of SciFact both use the SciFact expert).

A model directory holds ``encoder.json`` (``{"kind": "moe", "domains": [...], "domain": ...}``),
``config.json`` (the BERT config), ``model.safetensors`` and the tokenizer. Serving another
domain of the same weights is a folder ``domains/<name>/encoder.json`` with
``{"kind": "moe", "domain": "<name>", "weights": "../.."}``, which the trainer writes for each
domain, so a dense index config can say ``model: moe-minilm/domains/cranfield``.

Example::

    enc = load(Path("models/moe-minilm/domains/scifact"), device="cpu")
    vecs = enc.encode_documents(["Lava is molten rock."])
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.core.errors import ConfigError
from pipeline.encoders.bi_encoders import ENCODER_JSON, Encoder, weights_checksum

WEIGHTS = "model.safetensors"


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - core dependency
        raise ImportError("the moe/mamba encoders need torch: pip install neural-search") from exc
    return torch


class ModuleEncoder(Encoder):
    """An :class:`Encoder` over a torch bi-encoder module (shared by the MoE and Mamba loaders).

    The module must offer ``tokenize(texts, max_length) -> features`` and
    ``module(features) -> {"sentence_embedding": Tensor}``; vectors are L2-normalised.
    """

    def __init__(self, module: Any, identity: str, dim: int, device: str | None = None, batch_size: int = 64,
                 query_max_length: int = 64, doc_max_length: int = 256):
        torch = _torch()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.module = module.to(self.device).eval()
        self.identity, self.dim, self.normalize = identity, int(dim), True
        self.batch_size = batch_size
        self.query_max_length, self.doc_max_length = query_max_length, doc_max_length
        self._lock = threading.Lock()

    def _encode(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        torch = _torch()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                features = self.module.tokenize(list(texts[i : i + self.batch_size]), max_length)
                features = {k: v.to(self.device) for k, v in features.items()}
                emb = self.module(features)["sentence_embedding"].float()
                out.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self.query_max_length)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self.doc_max_length)


def mean_pool(token_embeddings, attention_mask):
    """Average of the token vectors where ``attention_mask`` is 1."""
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    return (token_embeddings * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class DomainRouting:
    """The domain index of each text of the batch in flight, read by every expert block."""

    def __init__(self) -> None:
        self.domain_ids = None


def _route(experts, routing: DomainRouting, hidden, *rest):
    """Run each example through the expert of its domain (one call when the batch has one domain)."""
    ids = routing.domain_ids
    if ids is None:
        raise ConfigError("MoE forward without domain ids: tokenize with a domain first")
    present = ids.unique().tolist()
    if len(present) == 1:
        return experts[int(present[0])](hidden, *rest)
    out = None
    for e in present:
        mask = ids == e
        part = experts[int(e)](hidden[mask], *(t[mask] for t in rest))
        if out is None:
            out = hidden.new_zeros((hidden.shape[0], *part.shape[1:]), dtype=part.dtype)
        out = out.index_put((mask.nonzero(as_tuple=True)[0],), part)
    return out


def _expert_modules():
    nn = _torch().nn

    class ExpertIntermediate(nn.Module):
        """One copy of a BERT layer's ``intermediate`` block per domain."""

        def __init__(self, base, n_experts: int, routing: DomainRouting):
            super().__init__()
            self.experts = nn.ModuleList(copy.deepcopy(base) for _ in range(n_experts))
            self.routing = routing

        def forward(self, hidden_states):
            return _route(self.experts, self.routing, hidden_states)

    class ExpertOutput(nn.Module):
        """One copy of a BERT layer's ``output`` block (dense, dropout, residual LayerNorm) per domain."""

        def __init__(self, base, n_experts: int, routing: DomainRouting):
            super().__init__()
            self.experts = nn.ModuleList(copy.deepcopy(base) for _ in range(n_experts))
            self.routing = routing

        def forward(self, hidden_states, input_tensor):
            return _route(self.experts, self.routing, hidden_states, input_tensor)

    return ExpertIntermediate, ExpertOutput


def build_moe_module(bert: Any, tokenizer: Any, domains: Sequence[str], layers: Sequence[int] | None = None):
    """Turn a ``BertModel`` into a domain-routed MoE bi-encoder (experts copied from its FFNs)."""
    nn = _torch().nn
    ExpertIntermediate, ExpertOutput = _expert_modules()
    domains = list(domains)
    if not domains or len(set(domains)) != len(domains):
        raise ConfigError(f"MoE needs distinct domain names, got {domains}")
    n_layers = len(bert.encoder.layer)
    layers = list(range(n_layers)) if layers is None else sorted(set(layers))
    if any(not 0 <= i < n_layers for i in layers):
        raise ConfigError(f"MoE layers {layers} out of range for a {n_layers}-layer model")
    routing = DomainRouting()
    for i in layers:
        layer = bert.encoder.layer[i]
        layer.intermediate = ExpertIntermediate(layer.intermediate, len(domains), routing)
        layer.output = ExpertOutput(layer.output, len(domains), routing)

    class MoEBiEncoder(nn.Module):
        """BERT with domain experts + mean pooling; ``forward(features)`` as sentence-transformers losses expect."""

        def __init__(self):
            super().__init__()
            self.bert = bert
            self.tokenizer = tokenizer
            self.domains = domains
            self.moe_layers = layers
            self.routing = routing
            self.domain = domains[0]

        def tokenize(self, texts: list[str], max_length: int, domain: str | None = None) -> dict[str, Any]:
            torch = _torch()
            domain = domain or self.domain
            if domain not in self.domains:
                raise ConfigError(f"unknown MoE domain {domain!r} (this model has {self.domains})")
            features = dict(self.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                                           pad_to_multiple_of=32, return_tensors="pt"))
            features["domain_ids"] = torch.full((len(texts),), self.domains.index(domain), dtype=torch.long)
            return features

        def forward(self, features: dict[str, Any]) -> dict[str, Any]:
            self.routing.domain_ids = features["domain_ids"].to(features["input_ids"].device)
            try:
                inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                tokens = self.bert(**inputs).last_hidden_state
            finally:
                self.routing.domain_ids = None
            return {"token_embeddings": tokens,
                    "sentence_embedding": mean_pool(tokens, features["attention_mask"])}

        def __getitem__(self, index: int):
            """``module[0]`` is the backbone (sentence-transformers' cached losses inspect it)."""
            if index != 0:
                raise IndexError(index)
            return self.bert

        def save(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
            """Write config, weights, tokenizer, ``encoder.json`` and one view per domain."""
            from safetensors.torch import save_file

            folder = Path(folder)
            folder.mkdir(parents=True, exist_ok=True)
            self.bert.config.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
            state = {k: v.detach().cpu().contiguous() for k, v in self.bert.state_dict().items()}
            save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
            meta = {"kind": "moe", "domains": self.domains, "domain": self.domains[0], "moe_layers": self.moe_layers,
                    "pooling": "mean", **(extra or {})}
            (folder / ENCODER_JSON).write_text(json.dumps(meta, indent=2))
            for name in self.domains:
                view = folder / "domains" / name
                view.mkdir(parents=True, exist_ok=True)
                (view / ENCODER_JSON).write_text(json.dumps({"kind": "moe", "domain": name, "weights": "../.."}))

    return MoEBiEncoder()


def moe_from_base(base_dir: Path, domains: Sequence[str], layers: Sequence[int] | None = None):
    """A MoE bi-encoder whose experts all start as copies of a BERT folder's FFNs (e.g. MiniLM)."""
    from transformers import AutoTokenizer, BertModel

    bert = BertModel.from_pretrained(str(base_dir), add_pooling_layer=False, local_files_only=True)
    bert = bert.float()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    return build_moe_module(bert, tokenizer, domains, layers)


def load_moe_module(folder: Path):
    """The MoE bi-encoder saved in ``folder`` (the one holding the weights)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = Path(folder)
    meta = read_meta(folder)
    bert = BertModel(BertConfig.from_pretrained(str(folder)), add_pooling_layer=False)
    module = build_moe_module(bert, AutoTokenizer.from_pretrained(str(folder), local_files_only=True),
                              meta["domains"], meta.get("moe_layers"))
    missing, unexpected = bert.load_state_dict(load_file(str(folder / WEIGHTS)), strict=False)
    if missing or unexpected:
        raise ConfigError(f"{folder}: weights do not match the MoE config (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    return module.eval()


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / ENCODER_JSON
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable encoder.json ({exc})") from exc
    if meta.get("kind") != "moe":
        raise ConfigError(f"{path}: kind is {meta.get('kind')!r}, expected 'moe'")
    return meta


def load(path: Path, device: str | None = None) -> ModuleEncoder:
    """The MoE encoder of a model folder or of one of its ``domains/<name>`` views."""
    path = Path(path)
    meta = read_meta(path)
    weights_dir = (path / meta["weights"]).resolve() if "weights" in meta else path
    if not (weights_dir / WEIGHTS).is_file():
        raise ConfigError(f"{path}: no MoE weights at {weights_dir / WEIGHTS}")
    module = load_moe_module(weights_dir)
    domain = meta.get("domain") or module.domains[0]
    if domain not in module.domains:
        raise ConfigError(f"{path}: domain {domain!r} is not one of the model's {module.domains}")
    module.domain = domain
    full = read_meta(weights_dir)
    identity = f"moe:{weights_dir.name}@sha256:{weights_checksum(weights_dir)[:16]}#{domain}"
    return ModuleEncoder(module, identity, module.bert.config.hidden_size, device,
                         query_max_length=int(full.get("query_max_length", 64)),
                         doc_max_length=int(full.get("doc_max_length", 256)))
