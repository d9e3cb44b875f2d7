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

Content is verified at publish (Lucene's CRC32 footers) and a SHA-256 of every file is
recorded in the manifest; ``resolve(..., content=True)`` checks both. Old versions are
pruned by :mod:`pipeline.storage.index_retention`, which never deletes ``current``, the last
verified version or a version a running service holds a lease on.
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
from contextvars import ContextVar
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints, ValidationError

from pipeline.core.errors import IndexCorruptError, IndexNotFoundError
from pipeline.storage.index_integrity import check_lucene_footers, file_digests, verify_content
from pipeline.storage.index_retention import prune

MANIFEST = "manifest.json"
LUCENE_DIR = "lucene"
"""Subfolder of a published lucene index version that holds the Lucene files."""
SHARDED_KIND = "lucene-shards"
"""Manifest kind of an index published as Lucene shards (``build-distributed --layout shards``)."""
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
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


class Manifest(BaseModel):
    """What a published index is: enough to verify it and to refuse a mismatch (a schema: wrong types are refused)."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    kind: StrictStr
    collection: StrictStr
    doc_count: StrictInt = Field(ge=0)
    source_checksum: StrictStr
    params: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, StrictInt] = Field(default_factory=dict)
    """Relative path -> size in bytes."""
    sha256: dict[str, Sha256] = Field(default_factory=dict)
    """Relative path -> SHA-256 hex of its content at publish (empty in manifests older than issue 21)."""
    versions: dict[str, StrictStr] = Field(default_factory=software_versions)
    created_at: float = Field(default_factory=time.time)
    version: StrictStr = ""

    def __init__(self, *args: Any, **data: Any):
        """Positional arguments in the order of the former dataclass (kind, collection, doc_count, source_checksum, ...)."""
        data.update(zip(("kind", "collection", "doc_count", "source_checksum", "params", "files", "versions", "created_at",
                         "version"), args, strict=False))
        super().__init__(**data)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2, sort_keys=True)

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise IndexCorruptError(f"version {Path(folder).name} has no {MANIFEST}: the build did not finish")
        try:
            return cls.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors()[:5])
            raise IndexCorruptError(f"version {Path(folder).name} has an invalid manifest ({problems})") from None

    def verify(self, folder: Path) -> None:
        """Every file the manifest lists exists with its recorded size (cheap: ``stat`` only)."""
        for rel, size in self.files.items():
            p = Path(folder) / rel
            if not p.is_file():
                raise IndexCorruptError(f"index version {Path(folder).name} is incomplete: {rel} is missing")
            if p.stat().st_size != size:
                raise IndexCorruptError(
                    f"index version {Path(folder).name} is corrupt: {rel} has {p.stat().st_size} bytes, manifest says {size}"
                )

    def verify_content(self, folder: Path) -> None:
        """Sizes, Lucene's CRC32 footers and the recorded SHA-256s (reads every byte)."""
        self.verify(folder)
        verify_content(folder, self.sha256)


def index_dir(root: Path, collection: str, index: str) -> Path:
    return Path(root) / check_name(collection, "collection") / check_name(index)


_PINNED: ContextVar[dict[tuple[str, str, str], str] | None] = ContextVar("pinned_index_versions", default=None)


@contextlib.contextmanager
def pinned(root: Path, collection: str, versions: dict[str, str]) -> Iterator[None]:
    """Within the block (this thread or task), :func:`resolve` returns these versions instead of ``current``.

    The service pins the versions it verified (``current``, or the last good one) while it builds
    a pipeline, so that stages open exactly those files.
    """
    key = str(Path(root).resolve())
    token = _PINNED.set({**(_PINNED.get() or {}), **{(key, collection, i): v for i, v in versions.items()}})
    try:
        yield
    finally:
        _PINNED.reset(token)


def resolve(root: Path, collection: str, index: str, content: bool = False) -> tuple[Path, Manifest]:
    """The published version of an index and its verified manifest (``content``: read and check every byte)."""
    base = index_dir(root, collection, index)
    current = base / "current"
    pin = (_PINNED.get() or {}).get((str(Path(root).resolve()), collection, index))
    if pin is not None:
        current = base / "versions" / check_name(pin, "version")
    if not current.exists():
        raise IndexNotFoundError(
            f"no published index {index!r} for collection {collection!r} under {root}: "
            f"run `python -m indexer build --dataset <dir> --index {index}`"
        )
    folder = current.resolve()
    manifest = Manifest.read(folder)
    manifest.verify_content(folder) if content else manifest.verify(folder)
    return folder, manifest


def list_files(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


@contextlib.contextmanager
def publishing(root: Path, collection: str, index: str, keep_versions: int | None = None) -> Iterator[Path]:
    """Build into a temporary folder; on success the caller's manifest is finalised and swapped in.

    Usage::

        with publishing(root, "scifact", "bm25") as tmp:
            build_into(tmp)
            write_manifest(tmp, Manifest(...))

    A build whose Lucene files fail their checksum footers is not published. ``keep_versions``
    (default ``$SEARCH_INDEX_KEEP_VERSIONS`` or 2) bounds the versions kept (see :func:`prune`).
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
            check_lucene_footers(tmp)
            manifest.sha256 = file_digests(tmp, manifest.files)
            _write_atomic(tmp / MANIFEST, manifest.to_json())
            final = base / "versions" / version
            os.rename(tmp, final)
            link_tmp = base / f".current-{version}"
            os.symlink(Path("versions") / version, link_tmp)
            os.replace(link_tmp, base / "current")
            prune(base, keep_versions)
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
