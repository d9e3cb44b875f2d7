"""Content checks of a published index: Lucene's CRC32 footers and a SHA-256 per file.

Every file Lucene writes (except ``write.lock``) ends in a 16-byte footer: the footer magic,
an algorithm id (0) and the CRC32 of everything before the checksum field. That is what
``CodecUtil.checksumEntireFile`` checks; :func:`lucene_footer_ok` does the same in Python
(no JVM needed, tested against Lucene's own check). FAISS files and the document store have
no footer, so the manifest records a SHA-256 of every file at publish time.

Example::

    check_lucene_footers(folder / "lucene")        # raises IndexCorruptError on a bad file
    digests = file_digests(folder)                 # {"lucene/_0.cfs": "ab12...", ...}
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path
from typing import Mapping

from pipeline.core.errors import IndexCorruptError

FOOTER_MAGIC = 0xC02893E8
"""``CodecUtil.FOOTER_MAGIC`` (``~CODEC_MAGIC``, CODEC_MAGIC = 0x3FD76C17)."""
FOOTER_LENGTH = 16
_CHUNK = 1 << 20
LUCENE_SKIP = {"write.lock"}


def lucene_footer_ok(path: Path) -> bool:
    """True when ``path`` ends in a valid Lucene footer whose CRC32 matches the file's content."""
    size = path.stat().st_size
    if size < FOOTER_LENGTH:
        return False
    crc = 0
    with open(path, "rb") as f:
        left = size - 8
        while left:
            block = f.read(min(_CHUNK, left))
            if not block:
                return False
            crc = zlib.crc32(block, crc)
            left -= len(block)
        expected = struct.unpack(">q", f.read(8))[0]
        f.seek(size - FOOTER_LENGTH)
        magic, algorithm = struct.unpack(">II", f.read(8))
    return magic == FOOTER_MAGIC and algorithm == 0 and expected == crc


def lucene_dirs(folder: Path) -> list[Path]:
    """Folders under ``folder`` that hold a Lucene index (they have a ``segments_N`` file)."""
    return sorted({p.parent for p in Path(folder).rglob("segments_*") if p.is_file()})


def check_lucene_footers(folder: Path) -> None:
    """Raise :class:`IndexCorruptError` naming the first Lucene file whose checksum footer is wrong."""
    for lucene in lucene_dirs(folder):
        for f in sorted(lucene.iterdir()):
            if f.is_file() and f.name not in LUCENE_SKIP and not lucene_footer_ok(f):
                raise IndexCorruptError(f"index file {f.relative_to(folder)} fails its Lucene checksum (CRC32 footer)")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder: Path, files: Mapping[str, int]) -> dict[str, str]:
    return {rel: sha256_file(Path(folder) / rel) for rel in files}


def check_digests(folder: Path, digests: Mapping[str, str]) -> None:
    """Raise :class:`IndexCorruptError` when a file's SHA-256 differs from the manifest's."""
    for rel, expected in digests.items():
        path = Path(folder) / rel
        if not path.is_file():
            raise IndexCorruptError(f"index file {rel} is missing")
        if sha256_file(path) != expected:
            raise IndexCorruptError(f"index file {rel} fails its sha256 check (content changed since publish)")


def verify_content(folder: Path, digests: Mapping[str, str]) -> None:
    """Both checks: Lucene footers of every Lucene file, then the manifest's SHA-256s."""
    check_lucene_footers(folder)
    check_digests(folder, digests)
