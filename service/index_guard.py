"""Which version of an index the service may serve, and whether a served one was damaged in place.

:meth:`IndexGuard.choose` takes ``current`` when its content verifies (sizes, Lucene's CRC32
footers, the manifest's SHA-256s), else the newest other version that does: a corrupt publish,
or a served version damaged on disk, falls back to the last good version by itself. A version
that failed is remembered and not read again (no reload loop on a bad version); the next one
published under ``current`` is checked afresh.

:meth:`IndexGuard.damaged` is cheap (``stat`` calls): a served file whose size, mtime or inode
changed is re-verified, and a failure marks the version bad (readiness turns 503, the watcher
falls back). Leases tell the indexer's retention which versions this process serves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import IndexCorruptError, IndexNotFoundError
from pipeline.storage.index_retention import drop_lease, mark_verified, newest_first, write_lease
from pipeline.storage.index_store import Manifest, index_dir

logger = logging.getLogger(__name__)

Snapshot = tuple[tuple[str, int, int, int], ...]


def snapshot(folder: Path, manifest: Manifest) -> Snapshot:
    """``(file, size, mtime_ns, inode)`` of the manifest and every file it lists."""
    out = []
    for rel in ["manifest.json", *sorted(manifest.files)]:
        try:
            st = (Path(folder) / rel).stat()
            out.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append((rel, -1, 0, 0))
    return tuple(out)


@dataclass
class Choice:
    folder: Path
    manifest: Manifest
    refused: list[str] = field(default_factory=list)
    """Why newer candidates (``current`` first) were passed over."""

    @property
    def fallback(self) -> bool:
        return bool(self.refused)


class IndexGuard:
    """Verified and refused index versions of one service process (thread-safe)."""

    def __init__(self, root: Path, holder: str | None = None):
        self.root = Path(root)
        self.holder = holder or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._ok: dict[Path, Snapshot] = {}
        self._bad: dict[Path, str] = {}
        self._manifests: dict[Path, Manifest] = {}
        self._lock = threading.Lock()

    def choose(self, collection: str, index: str) -> Choice:
        """The version to serve; raises :class:`IndexNotFoundError` or :class:`IndexCorruptError` when none can be."""
        base = index_dir(self.root, collection, index)
        current = base / "current"
        if not current.exists():
            raise IndexNotFoundError(f"no published index {index!r} for collection {collection!r}: "
                                     f"run `python -m indexer build --dataset <dir> --index {index}`")
        first = current.resolve()
        versions = base / "versions"
        others = newest_first(p for p in versions.iterdir() if p.is_dir() and p != first) if versions.is_dir() else []
        refused: list[str] = []
        for folder in [first, *others]:
            try:
                manifest = self._verified(folder)
            except IndexCorruptError as exc:
                refused.append(str(exc))
                continue
            with contextlib.suppress(OSError):
                mark_verified(base, folder.name)
            if refused:
                logger.error("index %s/%s: serving version %s instead of current: %s", collection, index,
                             folder.name, refused[0])
            return Choice(folder, manifest, refused)
        raise IndexCorruptError(f"no version of index {collection}/{index} verifies: {refused[0]}")

    def _verified(self, folder: Path) -> Manifest:
        with self._lock:
            if folder in self._bad:
                raise IndexCorruptError(self._bad[folder])
            known = self._manifests.get(folder)
        if known is not None and self._ok.get(folder) == snapshot(folder, known):
            return known  # verified before and unchanged on disk
        try:
            manifest = Manifest.read(folder)
            manifest.verify_content(folder)
            now = snapshot(folder, manifest)
        except IndexCorruptError as exc:
            self._refuse(folder, str(exc))
            raise
        with self._lock:
            self._ok[folder], self._manifests[folder] = now, manifest
        return manifest

    def _refuse(self, folder: Path, reason: str) -> None:
        with self._lock:
            self._bad[folder] = reason
            self._ok.pop(folder, None)
        logger.error("index version %s refused: %s", folder.name, reason)

    def damaged(self, served: dict[str, dict[str, str]]) -> dict[str, str]:
        """``collection/index -> reason`` for served versions whose files changed and no longer verify."""
        out = {}
        for collection, versions in served.items():
            for index, version in versions.items():
                folder = index_dir(self.root, collection, index) / "versions" / version
                with self._lock:
                    reason, manifest = self._bad.get(folder), self._manifests.get(folder)
                    seen = self._ok.get(folder)
                if reason is None and manifest is not None and seen != snapshot(folder, manifest):
                    try:
                        manifest = Manifest.read(folder)  # the manifest itself may have been rewritten
                        manifest.verify_content(folder)
                        with self._lock:
                            self._ok[folder], self._manifests[folder] = snapshot(folder, manifest), manifest
                    except (IndexCorruptError, OSError) as exc:
                        reason = f"served version {version} was damaged in place: {exc}"
                        self._refuse(folder, reason)
                if reason is not None:
                    out[f"{collection}/{index}"] = reason
        return out

    def refresh_leases(self, served: dict[str, dict[str, str]]) -> None:
        for collection, versions in served.items():
            for index, version in versions.items():
                with contextlib.suppress(OSError):
                    write_lease(index_dir(self.root, collection, index), self.holder, version)

    def drop_leases(self, served: dict[str, dict[str, str]]) -> None:
        for collection, versions in served.items():
            for index in versions:
                drop_lease(index_dir(self.root, collection, index), self.holder)
