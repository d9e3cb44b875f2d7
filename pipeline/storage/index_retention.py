"""Which old index versions may be deleted, and the leases that running services hold on versions.

Layout next to ``versions/`` (see :mod:`pipeline.storage.index_store`)::

    <index>/last-verified -> versions/<version>   the last version a service verified and served
    <index>/leases/<holder>                        text: the version the holder serves (mtime = last refresh)

:func:`prune` keeps the newest ``keep`` versions and, whatever their age, ``current``, the
``last-verified`` target and every version with a lease refreshed within ``lease_ttl_s``.
So two bad publishes in a row can no longer delete the only good version, and a replica
started afterwards can still fall back to it.

Example::

    write_lease(base, "host-1234", "20260101T000000-abcd1234")   # a service, every few seconds
    prune(base, keep=2)                                            # the indexer, after a publish
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LAST_VERIFIED = "last-verified"
LEASES = "leases"
DEFAULT_KEEP = 2
DEFAULT_LEASE_TTL_S = 600.0


def keep_setting() -> int:
    """``$SEARCH_INDEX_KEEP_VERSIONS`` (at least 1; default 2)."""
    raw = os.environ.get("SEARCH_INDEX_KEEP_VERSIONS", "")
    try:
        return max(1, int(raw)) if raw else DEFAULT_KEEP
    except ValueError:
        raise ValueError(f"SEARCH_INDEX_KEEP_VERSIONS must be a whole number >= 1, got {raw!r}") from None


def lease_ttl_setting() -> float:
    """``$SEARCH_INDEX_LEASE_TTL_S``: a lease older than this is ignored (default 600 s)."""
    raw = os.environ.get("SEARCH_INDEX_LEASE_TTL_S", "")
    try:
        return max(1.0, float(raw)) if raw else DEFAULT_LEASE_TTL_S
    except ValueError:
        raise ValueError(f"SEARCH_INDEX_LEASE_TTL_S must be a number of seconds, got {raw!r}") from None


def write_lease(base: Path, holder: str, version: str) -> None:
    """Record (or refresh) that ``holder`` serves ``version`` of the index at ``base``."""
    folder = Path(base) / LEASES
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{holder}.tmp"
    tmp.write_text(version)
    os.replace(tmp, folder / holder)


def drop_lease(base: Path, holder: str) -> None:
    with contextlib.suppress(OSError):
        (Path(base) / LEASES / holder).unlink()


def leased_versions(base: Path, ttl_s: float | None = None) -> set[str]:
    """Versions named by leases refreshed within ``ttl_s`` seconds."""
    ttl_s = lease_ttl_setting() if ttl_s is None else ttl_s
    now, out = time.time(), set()
    folder = Path(base) / LEASES
    if not folder.is_dir():
        return out
    for lease in folder.iterdir():
        with contextlib.suppress(OSError):
            if not lease.name.startswith(".") and now - lease.stat().st_mtime <= ttl_s:
                out.add(lease.read_text().strip())
    return out


def mark_verified(base: Path, version: str) -> None:
    """Point ``last-verified`` at ``version`` (atomic)."""
    link = Path(base) / LAST_VERIFIED
    with contextlib.suppress(OSError):
        if os.readlink(link) == os.path.join("versions", version):
            return
    tmp = Path(base) / f".{LAST_VERIFIED}-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink(Path("versions") / version, tmp)
    os.replace(tmp, link)


def protected_versions(base: Path) -> set[str]:
    """``current``, ``last-verified`` and leased versions: never deleted."""
    out = leased_versions(base)
    for name in ("current", LAST_VERIFIED):
        with contextlib.suppress(OSError):
            out.add(Path(os.readlink(Path(base) / name)).name)
    return out


def newest_first(folders) -> list[Path]:
    """Version folders, newest publish first (by the manifest's mtime: names tie within a second)."""
    def when(p: Path) -> tuple[int, str]:
        try:
            return (p / "manifest.json").stat().st_mtime_ns, p.name
        except OSError:
            return 0, p.name
    return sorted(folders, key=when, reverse=True)


def prune(base: Path, keep: int | None = None) -> list[str]:
    """Delete versions beyond the newest ``keep`` that nothing protects; returns the deleted names."""
    keep = keep_setting() if keep is None else max(1, keep)
    protected = protected_versions(base)
    versions = newest_first(p for p in (Path(base) / "versions").iterdir() if p.is_dir())
    deleted = []
    for old in versions[keep:]:
        if old.name not in protected:
            shutil.rmtree(old, ignore_errors=True)
            deleted.append(old.name)
    if deleted:
        logger.info("pruned index versions %s (kept %d newest and %s)", deleted, keep, sorted(protected))
    return deleted
