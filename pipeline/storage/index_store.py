"""Where published indexes live, and how they are verified and swapped atomically.

Layout under the index root (``$SEARCH_INDEX_ROOT``, default ``./indexes``)::

    <root>/<collection>/<index>/current -> versions/<version>   (symlink)
    <root>/<collection>/<index>/versions/<version>/manifest.json
    <root>/<collection>/<index>/versions/<version>/...           (index files)

A build writes into ``.building-*`` next to ``versions/``, writes the manifest
last, renames the folder into ``versions/`` and then replaces the ``current``
symlink with ``os.replace`` (atomic on POSIX). An interrupted build leaves only a
``.building-*`` folder behind, which the next build removes; the published
version keeps serving throughout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from pipeline.core.errors import IndexCorruptError, IndexNotFoundError

MANIFEST = "manifest.json"
LUCENE_DIR = "lucene"
"""Subfolder of a published lucene index version that holds the Lucene files."""
SHARDED_KIND = "lucene-shards"
"""Manifest kind of an index published as Lucene shards (``build-distributed --layout shards``)."""
KEEP_VERSIONS = 2
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(name: str, what: str = "index") -> str:
    """Reject path-like or odd names (``../x``, ``a/b``, empty) with a clear error."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValueError(f"invalid {what} name {name!r}: use letters, digits, '.', '_' or '-' (no paths)")
    return name


def software_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("pyserini", "faiss-cpu", "sentence-transformers", "torch", "transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


@dataclass
class Manifest:
    """What a published index is: enough to verify it and to refuse a mismatch."""

    kind: str
    collection: str
    doc_count: int
    source_checksum: str
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=software_versions)
    created_at: float = field(default_factory=time.time)
    version: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise IndexCorruptError(f"{folder} has no {MANIFEST}: the build did not finish")
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise IndexCorruptError(f"{path} is not a valid manifest: {exc}") from exc

    def verify(self, folder: Path) -> None:
        """Every file the manifest lists exists with its recorded size."""
        for rel, size in self.files.items():
            p = Path(folder) / rel
            if not p.is_file():
                raise IndexCorruptError(f"index {folder} is incomplete: {rel} is missing")
            if p.stat().st_size != size:
                raise IndexCorruptError(
                    f"index {folder} is corrupt: {rel} has {p.stat().st_size} bytes, manifest says {size}"
                )


def index_dir(root: Path, collection: str, index: str) -> Path:
    return Path(root) / check_name(collection, "collection") / check_name(index)


def resolve(root: Path, collection: str, index: str) -> tuple[Path, Manifest]:
    """The published version of an index and its verified manifest."""
    base = index_dir(root, collection, index)
    current = base / "current"
    if not current.exists():
        raise IndexNotFoundError(
            f"no published index {index!r} for collection {collection!r} under {root}: "
            f"run `python -m indexer build --dataset <dir> --index {index}`"
        )
    folder = current.resolve()
    manifest = Manifest.read(folder)
    manifest.verify(folder)
    return folder, manifest


def list_files(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


@contextlib.contextmanager
def publishing(root: Path, collection: str, index: str) -> Iterator[Path]:
    """Build into a temporary folder; on success the caller's manifest is finalised and swapped in.

    Usage::

        with publishing(root, "scifact", "bm25") as tmp:
            build_into(tmp)
            write_manifest(tmp, Manifest(...))
    """
    base = index_dir(root, collection, index)
    (base / "versions").mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in base.glob(".building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        version = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        tmp = base / f".building-{version}"
        tmp.mkdir()
        try:
            yield tmp
            manifest = Manifest.read(tmp)
            manifest.version = version
            manifest.files = list_files(tmp)
            _write_atomic(tmp / MANIFEST, manifest.to_json())
            final = base / "versions" / version
            os.rename(tmp, final)
            link_tmp = base / f".current-{version}"
            os.symlink(Path("versions") / version, link_tmp)
            os.replace(link_tmp, base / "current")
            _prune(base)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def write_manifest(folder: Path, manifest: Manifest) -> None:
    _write_atomic(Path(folder) / MANIFEST, manifest.to_json())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _prune(base: Path) -> None:
    current = (base / "current").resolve()
    versions = sorted((p for p in (base / "versions").iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in versions[:-KEEP_VERSIONS]:
        if old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)
