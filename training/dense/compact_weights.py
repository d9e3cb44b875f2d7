"""Pack a BERT-style model folder into a small int8 file to carry to the GPU box, and unpack it there.

The GPU machine receives at most 64 MiB of working tree, shared with everything else in the
checkout, so MiniLM (91 MB in fp32) travels as per-row symmetric int8 (scales in fp16),
with only the word-embedding rows that the collections' text actually uses, xz-compressed
(about 15 MB). Unpacking writes an fp32 ``model.safetensors`` next to the folder's other files.
Unused embedding rows come back as zeros: the unpacked model is for those collections only.

    python -m training.dense.compact_weights pack --model minilm --out .gpu/minilm-q8 \\
        --keep-tokens-of ../shared/data/scifact ../shared/data/cranfield
    python -m training.dense.compact_weights unpack --packed .gpu/minilm-q8 --out "$GPU_WORK/minilm"
    python -m training.dense.compact_weights unpack-tree --src <packed folder> --out <folder>

``gpu/pack.sh`` packs MiniLM with every vocabulary row (no ``--keep-tokens-of``) and ``gpu/run.sh`` unpacks it
on the machine (gpu/README.md).
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import sys
from pathlib import Path
from typing import Iterable

PACKED = "weights.q8.safetensors.xz"
WEIGHTS = "model.safetensors"
MIN_QUANT_NUMEL = 4096


def quantize(state: dict, keep_rows: dict[str, list[int]] | None = None) -> dict:
    """int8 per row (``.q8`` + ``.scale``) for large 2-D float tensors, fp16 for the rest; optional row subsets."""
    import torch

    out = {}
    for name, w in state.items():
        w = w.float()
        if keep_rows and name in keep_rows:
            rows = torch.tensor(sorted(keep_rows[name]), dtype=torch.int64)
            out[f"{name}.rows"] = rows.to(torch.int32)
            out[f"{name}.shape"] = torch.tensor(list(w.shape), dtype=torch.int64)
            w = w[rows]
        if w.ndim == 2 and w.numel() >= MIN_QUANT_NUMEL:
            scale = (w.abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-12)
            out[f"{name}.q8"] = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
            out[f"{name}.scale"] = scale.half()
        else:
            out[name] = w.half()
    return out


def dequantize(packed: dict) -> dict:
    """The fp32 state dict back (rows left out by ``keep_rows`` are zeros)."""
    import torch

    names = {k.rsplit(".", 1)[0] for k in packed if k.endswith((".q8", ".rows"))}
    names |= {k for k in packed if not k.endswith((".q8", ".scale", ".rows", ".shape"))}
    state = {}
    for name in sorted(names):
        if f"{name}.q8" in packed:
            w = packed[f"{name}.q8"].float() * packed[f"{name}.scale"].float()
        else:
            w = packed[name].float()
        if f"{name}.rows" in packed:
            full = torch.zeros(tuple(packed[f"{name}.shape"].tolist()), dtype=torch.float32)
            full[packed[f"{name}.rows"].long()] = w
            w = full
        state[name] = w.contiguous()
    return state


def used_token_ids(tokenizer, datasets: Iterable[Path], max_length: int = 512) -> set[int]:
    """Every token id within ``max_length`` of the corpus and queries of the given BEIR folders (+ special tokens)."""
    ids = set(tokenizer.all_special_ids)
    for folder in datasets:
        texts = []
        for name in ("corpus.jsonl", "queries.jsonl"):
            with (Path(folder) / name).open(encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    texts.append(f"{row.get('title') or ''} {row.get('text') or ''}".strip())
        for i in range(0, len(texts), 512):
            for seq in tokenizer(texts[i : i + 512], truncation=True, max_length=max_length)["input_ids"]:
                ids.update(seq)
    return ids


def pack(model_dir: Path, out: Path, keep_tokens_of: list[Path], max_length: int = 512,
         drop: tuple[str, ...] = ("pooler.", "embeddings.position_ids")) -> Path:
    """Write ``out/weights.q8.safetensors.xz`` plus the folder's config and tokenizer files.

    ``drop``: tensors left out (MiniLM's pooler is unused by mean pooling). With ``keep_tokens_of``,
    only the vocabulary rows and the first ``max_length`` positions that text uses are kept.
    """
    from safetensors.torch import load_file, save
    from transformers import AutoTokenizer

    model_dir, out = Path(model_dir), Path(out)
    shutil.copytree(model_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(WEIGHTS, "*.md", "data_config.json", "vocab.txt", ".gitattributes"))
    state = {k: v for k, v in load_file(str(model_dir / WEIGHTS)).items() if not k.startswith(drop)}
    keep = None
    if keep_tokens_of:
        rows = sorted(used_token_ids(AutoTokenizer.from_pretrained(str(model_dir)), keep_tokens_of, max_length))
        keep = {k: rows for k in state if k.endswith("word_embeddings.weight")}
        keep.update({k: list(range(max_length)) for k in state if k.endswith("position_embeddings.weight")})
    (out / PACKED).write_bytes(lzma.compress(save(quantize(state, keep)), preset=9 | lzma.PRESET_EXTREME))
    return out / PACKED


def unpack(packed_dir: Path, out: Path) -> Path:
    from safetensors.torch import load, save_file

    packed_dir, out = Path(packed_dir), Path(out)
    shutil.copytree(packed_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(PACKED))
    state = dequantize(load(lzma.decompress((packed_dir / PACKED).read_bytes())))
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    return out / WEIGHTS


def unpack_tree(src: Path, out: Path) -> int:
    """Copy a folder, decompressing every ``*.xz`` file (collections carried xz-compressed); returns files written."""
    count = 0
    for path in sorted(Path(src).rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(src)
        dest = Path(out) / (rel.with_suffix("") if path.suffix == ".xz" else rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".xz":
            dest.write_bytes(lzma.decompress(path.read_bytes()))
        else:
            shutil.copy(path, dest)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.dense.compact_weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--model", default="minilm", help="'minilm' or a model folder with model.safetensors")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--keep-tokens-of", type=Path, nargs="*", default=[], help="BEIR folders whose vocabulary to keep")
    p.add_argument("--max-length", type=int, default=512, help="tokens per text that the model will see")
    u = sub.add_parser("unpack")
    u.add_argument("--packed", type=Path, required=True)
    u.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("unpack-tree", help="copy a folder, decompressing *.xz files")
    t.add_argument("--src", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "unpack-tree":
        print(f"{unpack_tree(args.src, args.out)} files -> {args.out}")
        return 0
    if args.cmd == "pack":
        if args.model == "minilm":
            from pipeline.encoders.bi_encoders import minilm_path

            args.model = minilm_path()
        path = pack(Path(args.model), args.out, args.keep_tokens_of, args.max_length)
    else:
        path = unpack(args.packed, args.out)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
