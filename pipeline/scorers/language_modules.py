"""Language and ranking modules for one frozen reranker, loaded once and swapped per request.

A module is a set of parameter differences for the base model, of one of two kinds
(Litschko, Vulić, Glavaš: "Parameter-Efficient Neural Reranking for Cross-Lingual and
Multilingual Retrieval"):

- **LoRA adapter** (``peft`` folder: ``adapter_config.json`` + ``adapter_model.safetensors``):
  low-rank ``ΔW = B·A·alpha/r`` per target matrix, plus replaced ``modules_to_save`` tensors;
- **sparse fine-tuning mask (SFTM)** (``sftm.safetensors``): the top-k% most-changed weights of a
  full fine-tune, stored as flat indices (int32) and differences (bf16) per tensor.

:class:`ModuleRegistry` owns the base model. ``with registry.activated(["ranking", "de"]):`` applies
the modules in order in place and, on exit, restores every touched tensor from a saved copy
(bit-exact, no drift). One lock covers apply -> forward -> restore, so concurrent requests of
different languages never see each other's module: each waits for the model instead.

Example::

    registry = ModuleRegistry(model)
    registry.add(load_module(Path("models/lang-modules/lora/de"), "de"))
    with registry.activated(["de"]):
        logits = model(**batch).logits
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence, Union

from pipeline.core.errors import ModelNotFoundError, PipelineError

SFTM_FILE = "sftm.safetensors"
SFTM_META = "sftm.json"
LORA_CONFIG = "adapter_config.json"
LORA_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


class ModuleMismatchError(PipelineError):
    """A module names a parameter the base model lacks, or one of another shape."""


@dataclass(frozen=True)
class LowRank:
    """``ΔW = b @ a * scale`` (a: r x in, b: out x r)."""

    a: "torch.Tensor"  # noqa: F821
    b: "torch.Tensor"  # noqa: F821
    scale: float

    @property
    def nbytes(self) -> int:
        return self.a.numel() * self.a.element_size() + self.b.numel() * self.b.element_size()


@dataclass(frozen=True)
class Sparse:
    """``W.flatten()[index] += values``."""

    index: "torch.Tensor"  # noqa: F821
    values: "torch.Tensor"  # noqa: F821

    @property
    def nbytes(self) -> int:
        return self.index.numel() * self.index.element_size() + self.values.numel() * self.values.element_size()


@dataclass(frozen=True)
class Replace:
    """``W = values`` (a tensor a module retrains whole, e.g. the classifier head)."""

    values: "torch.Tensor"  # noqa: F821

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size()


Delta = Union[LowRank, Sparse, Replace]


@dataclass(frozen=True)
class Module:
    """A named set of parameter deltas (``kind`` 'lora' or 'sftm')."""

    name: str
    kind: Literal["lora", "sftm"]
    deltas: Mapping[str, Delta]

    @property
    def nbytes(self) -> int:
        """Memory the module holds (its stored tensors, not the base model)."""
        return sum(d.nbytes for d in self.deltas.values())

    @property
    def label(self) -> str:
        return f"{'adapter' if self.kind == 'lora' else 'sftm'}:{self.name}"


def load_module(folder: Path, name: str | None = None) -> Module:
    """Load a LoRA (peft) or SFTM folder; raises ModelNotFoundError when neither is there."""
    folder = Path(folder)
    name = name or folder.name
    if (folder / SFTM_FILE).is_file():
        return load_sftm(folder, name)
    if (folder / LORA_CONFIG).is_file():
        return load_lora(folder, name)
    raise ModelNotFoundError(
        f"no language module at {folder} (expected {LORA_CONFIG} or {SFTM_FILE}): "
        f"train one with `python -m training adapters ...` or `python -m training sftm ...`"
    )


def load_lora(folder: Path, name: str) -> Module:
    """A peft LoRA folder as deltas (peft is not needed at inference)."""
    from safetensors.torch import load_file

    config = json.loads((Path(folder) / LORA_CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise ModuleMismatchError(f"{folder}: only plain LoRA adapters are supported, got {config.get('peft_type')}")
    scale = float(config["lora_alpha"]) / float(config["r"])
    if config.get("use_rslora"):
        scale = float(config["lora_alpha"]) / float(config["r"]) ** 0.5
    tensors = load_file(str(Path(folder) / LORA_WEIGHTS))
    deltas: dict[str, Delta] = {}
    for key, value in tensors.items():
        path = key.removeprefix(_PEFT_PREFIX)
        if ".lora_A." in path:
            target = path.replace(".lora_A.", ".")
            deltas[target] = LowRank(value.float(), tensors[key.replace(".lora_A.", ".lora_B.")].float(), scale)
        elif ".lora_B." in path:
            continue
        else:
            deltas[path.replace(".modules_to_save.default.", ".").replace(".modules_to_save.", ".")] = Replace(value.float())
    return Module(name, "lora", deltas)


def load_sftm(folder: Path, name: str) -> Module:
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / SFTM_FILE))
    deltas: dict[str, Delta] = {}
    for key in tensors:
        if key.endswith(".index"):
            param = key.removesuffix(".index")
            deltas[param] = Sparse(tensors[key].long(), tensors[param + ".values"].float())
    return Module(name, "sftm", deltas)


def sparse_difference(base: Mapping[str, "torch.Tensor"], tuned: Mapping[str, "torch.Tensor"],  # noqa: F821
                      density: float) -> dict[str, Sparse]:
    """The ``density`` share of weights that changed most (by |difference|, over all tensors together)."""
    import torch

    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    names = [n for n in base if n in tuned and base[n].is_floating_point()]
    diffs = {n: (tuned[n].detach().float() - base[n].detach().float()).flatten() for n in names}
    total = sum(d.numel() for d in diffs.values())
    keep = max(1, int(total * density))
    flat = torch.cat([d.abs() for d in diffs.values()])
    top = torch.topk(flat, keep, sorted=False).indices  # exactly `keep` (Adam moves many weights by equal steps)
    top, _ = torch.sort(top[flat[top] > 0])
    out: dict[str, Sparse] = {}
    offset = 0
    for n, d in diffs.items():
        lo, hi = torch.searchsorted(top, torch.tensor([offset, offset + d.numel()], device=top.device)).tolist()
        idx = top[lo:hi] - offset
        if idx.numel():
            out[n] = Sparse(idx, d[idx])
        offset += d.numel()
    return out


def save_sftm(folder: Path, deltas: Mapping[str, Sparse], meta: Mapping[str, object]) -> Path:
    """Store an SFTM compactly: int32 indices + bf16 differences per tensor, and a JSON description."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, delta in deltas.items():
        tensors[f"{name}.index"] = delta.index.to(torch.int32).contiguous()
        tensors[f"{name}.values"] = delta.values.to(torch.bfloat16).contiguous()
    save_file(tensors, str(folder / SFTM_FILE))
    count = sum(d.index.numel() for d in deltas.values())
    (folder / SFTM_META).write_text(json.dumps({**meta, "nonzero": count}, indent=2, sort_keys=True))
    return folder / SFTM_FILE


class ModuleRegistry:
    """The base model plus every loaded module; activation is exclusive and exactly reversible."""

    def __init__(self, model: "torch.nn.Module", merge_lora: bool = True):  # noqa: F821
        self.model = model
        self.identity: str | None = None
        """The base's identity (set by the loader): a module recording another base is refused."""
        self.merge_lora = merge_lora
        """True: add ``B·A·scale`` into the weights on activation (a copy per swap, base-speed forward);
        False: leave the weights alone and add the low-rank term in forward hooks (free swap, slower forward)."""
        self._params = dict(model.named_parameters())
        self._layers = dict(model.named_modules())
        self._modules: dict[str, Module] = {}
        self._lock = threading.RLock()
        self._low_rank: dict[str, list[LowRank]] = {}
        """Active LoRA terms per linear layer, read by its forward hook (only changed under the lock)."""
        self._hooked: set[str] = set()
        self._applied: tuple[str, ...] = ()
        """Modules applied now (left applied by ``activated(keep=True)``); the base is pristine when empty."""
        self._undo: list[list] = []
        """Per applied module (in order): how to undo its tensor changes."""
        self._hooked_now: list[list[str]] = []
        """Per applied module: the layers whose forward hook got one of its LoRA terms."""

    def add(self, module: Module) -> None:
        """Check a module against the base model and keep it (tensors moved to the model's device)."""
        for name, delta in module.deltas.items():
            param = self._params.get(name)
            if param is None:
                raise ModuleMismatchError(f"module {module.name!r} changes {name!r}, which the base model lacks")
            if isinstance(delta, LowRank) and (delta.b.shape[0], delta.a.shape[1]) != tuple(param.shape):
                raise ModuleMismatchError(f"module {module.name!r}: {name} is {tuple(param.shape)}, the adapter "
                                          f"makes {(delta.b.shape[0], delta.a.shape[1])}")
            if isinstance(delta, Replace) and delta.values.shape != param.shape:
                raise ModuleMismatchError(f"module {module.name!r}: {name} shape {tuple(delta.values.shape)} "
                                          f"!= {tuple(param.shape)}")
            if isinstance(delta, Sparse) and delta.index.numel() and int(delta.index.max()) >= param.numel():
                raise ModuleMismatchError(f"module {module.name!r}: an index of {name} is past its {param.numel()} values")
            if isinstance(delta, LowRank) and not _is_linear_weight(self._layers, name):
                raise ModuleMismatchError(f"module {module.name!r}: {name} is not the weight of a linear layer")
        import torch

        device = next(iter(self._params.values())).device
        moved = {n: _to(d, device) for n, d in module.deltas.items()}
        with self._lock, torch.no_grad():
            self._restore()  # modules are added with the base pristine (a kept activation is undone first)
            for name, delta in moved.items():
                layer = name.removesuffix(".weight")
                if isinstance(delta, LowRank) and not self.merge_lora and layer not in self._hooked:
                    self._layers[layer].register_forward_hook(self._hook(layer))
                    self._hooked.add(layer)
            self._modules[module.name] = Module(module.name, module.kind, moved)

    def _hook(self, layer: str):
        def add_low_rank(_module, inputs, output):
            terms = self._low_rank.get(layer)
            if not terms:
                return None
            x = inputs[0]
            for t in terms:
                output = output + (x @ t.a.t().to(x.dtype)) @ t.b.t().to(x.dtype) * t.scale
            return output

        return add_low_rank

    def __contains__(self, name: str) -> bool:
        return name in self._modules

    def get(self, name: str) -> Module:
        return self._modules[name]

    @property
    def names(self) -> list[str]:
        return sorted(self._modules)

    @contextlib.contextmanager
    def activated(self, names: Sequence[str], keep: bool = False) -> Iterator[None]:
        """Apply ``names`` in order for the duration of the block; the base weights come back exactly.

        LoRA terms are merged into the weights (``merge_lora``, the default) or, unmerged, added by
        each adapted linear layer's forward hook while active. Sparse and replaced tensors are
        changed in place and restored from saved values.

        ``keep=True`` leaves the modules applied after the block, until an activation of another module
        list (or :meth:`reset`, or :meth:`add`) restores the base first: consecutive activations of the
        same modules (a stream of same-language requests) then cost nothing. Only code that goes through
        ``activated`` may read the weights.
        """
        import torch

        missing = [n for n in names if n not in self._modules]
        if missing:
            raise KeyError(f"modules not loaded: {missing} (loaded: {self.names})")
        with self._lock, torch.no_grad():
            if tuple(names) != self._applied:
                keep_prefix = 0  # modules already applied in the same order stay (e.g. the ranking module)
                while (keep_prefix < min(len(names), len(self._applied))
                       and names[keep_prefix] == self._applied[keep_prefix]):
                    keep_prefix += 1
                self._restore(keep_prefix)
                self._apply(tuple(names))
            try:
                yield
            finally:
                if not keep:
                    self._restore()

    def reset(self) -> None:
        """Restore the base weights exactly (after a ``keep=True`` activation)."""
        import torch

        with self._lock, torch.no_grad():
            self._restore()

    def _apply(self, names: tuple[str, ...]) -> None:
        """Apply the modules of ``names`` past those already applied (lock held); on an error, all is undone."""
        try:
            for name in names[len(self._applied):]:
                undo, hooked = [], []
                self._undo.append(undo)
                self._hooked_now.append(hooked)
                self._applied = (*self._applied, name)
                for pname, delta in self._modules[name].deltas.items():
                    if isinstance(delta, LowRank) and not self.merge_lora:
                        layer = pname.removesuffix(".weight")
                        self._low_rank.setdefault(layer, []).append(delta)
                        hooked.append(layer)
                    else:
                        undo.append(_apply(self._params[pname], delta))
        except BaseException:
            self._restore()
            raise

    def _restore(self, keep: int = 0) -> None:
        """Undo the applied modules past the first ``keep``, newest first (overlapping deltas undo exactly)."""
        while len(self._applied) > keep:
            for layer in self._hooked_now.pop():
                self._low_rank[layer].pop()
            for param, index, original in reversed(self._undo.pop()):
                if index is None:
                    param.copy_(original)
                else:
                    param.view(-1).index_copy_(0, index, original)
            self._applied = self._applied[:-1]


def _is_linear_weight(layers: Mapping[str, object], name: str) -> bool:
    import torch

    layer = layers.get(name.removesuffix(".weight")) if name.endswith(".weight") else None
    return isinstance(layer, torch.nn.Linear)


def _apply(param: "torch.Tensor", delta: Delta):  # noqa: F821
    """Apply one delta in place; returns ``(param, index or None, saved values)`` to undo it."""
    if isinstance(delta, Sparse):
        flat, index = param.view(-1), delta.index.to(param.device)
        saved = flat.index_select(0, index)  # the values now (not the base's): exact when only later modules are undone
        flat.index_add_(0, index, delta.values.to(param.device, param.dtype))
        return param, index, saved
    saved = param.detach().clone()
    if isinstance(delta, LowRank):
        param.add_((delta.b.to(param.device) @ delta.a.to(param.device)).to(param.dtype), alpha=delta.scale)
    else:
        param.copy_(delta.values.to(param.device, param.dtype))
    return param, None, saved


def _to(delta: Delta, device) -> Delta:
    if isinstance(delta, LowRank):
        return LowRank(delta.a.to(device), delta.b.to(device), delta.scale)
    if isinstance(delta, Sparse):
        return Sparse(delta.index.to(device), delta.values.to(device))
    return Replace(delta.values.to(device))
