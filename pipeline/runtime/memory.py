"""glibc allocator settings for the whole process: one policy, set by whoever asks first.

Two needs pull ``mallopt``'s mmap/trim thresholds in opposite directions:

* **a long-running service** (:func:`tame_allocator`, called at service start): rerankers see
  batches of every shape, and on the CPU two caches then grow for a long time: glibc keeps freed
  large blocks in its heap (fragmentation), and oneDNN caches a compiled primitive per shape.
  Measured with the bf16 cross-encoder on random shapes for 90 s: RSS 461 -> 1,394 MB in 33 s and
  still rising by default, 461 -> 726 MB with large blocks served by mmap (returned to the system
  on free), 461 -> 1,044 MB with a small oneDNN cache. Threshold: 64 KiB.
* **a batch job scoring on the CPU** (:func:`keep_freed_memory`, called when a CPU cross-encoder
  loads): glibc serves large blocks by mmap and unmaps them on free, so every forward pass
  page-faults its activations in again. For a batch of 8 SciFact pairs that cost about a fifth of
  the int8 forward pass (3.9 s vs 3.1 s per 100 pairs, 2026-11-28, 2-core Xeon). Threshold: 1 GiB.

The settings are process-wide, so they used to undo each other: the service tamed the allocator,
then loading the CPU cross-encoder raised the thresholds to 1 GiB again. Now the service's policy
wins: :func:`keep_freed_memory` leaves a tamed allocator alone, and :func:`allocator_policy` says
which policy is in force. Both are no-ops (False) on other C libraries than glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 64 * 1024
"""The service's threshold: blocks above 64 KiB come from mmap and go back to the system on free."""
KEEP_THRESHOLD_BYTES = 1 << 30
"""The batch job's threshold: blocks up to 1 GiB come from (and return to) the heap."""
ONEDNN_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"

TAMED, KEEP_FREED = "tamed", "keep-freed"
_policy: str | None = None
_lock = threading.Lock()


def allocator_policy() -> str | None:
    """The policy set in this process: ``"tamed"``, ``"keep-freed"``, or None (glibc's defaults)."""
    return _policy


def tame_allocator(mmap_threshold: int = MMAP_THRESHOLD_BYTES, onednn_cache: int = 64) -> bool:
    """Serve allocations above ``mmap_threshold`` bytes by mmap and cap oneDNN's primitive cache
    (unless the environment already sets it); call it at process start, before torch runs anything.
    Later :func:`keep_freed_memory` calls keep this setting. Returns whether glibc accepted it."""
    global _policy
    os.environ.setdefault(ONEDNN_CACHE, str(onednn_cache))
    with _lock:
        ok = _mallopt(mmap_threshold)
        if ok:
            _policy = TAMED
    logger.debug("mallopt mmap/trim threshold %d bytes: %s", mmap_threshold, ok)
    return ok


def keep_freed_memory() -> bool:
    """Ask glibc to recycle freed blocks up to 1 GiB, unless the process tamed its allocator (a service:
    flat memory over the last fifth of CPU speed). Returns whether the thresholds were raised now or before."""
    global _policy
    with _lock:
        if _policy == TAMED:
            logger.info("allocator tamed for a long-running process: freed memory is not kept for reuse")
            return False
        if _policy == KEEP_FREED:
            return True
        ok = _mallopt(KEEP_THRESHOLD_BYTES)
        if ok:
            _policy = KEEP_FREED
    logger.debug("glibc mallopt thresholds %s", "raised" if ok else "unchanged")
    return ok


def _mallopt(threshold: int) -> bool:
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
