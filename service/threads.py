"""The threads that run blocking search work (pipelines, document lookups, reloads).

Pyserini calls into the JVM through pyjnius, which attaches each calling thread to the JVM
but does not detach it when the thread ends; a JVM that still lists a dead native thread can
crash at its next safepoint. These workers detach themselves as they exit
(:func:`pipeline.runtime.java.mark_jvm_thread`), and ``contextvars`` (the request id) follow
the work into the thread.
"""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from pipeline.runtime.java import detach_threads_from_jvm_on_exit, mark_jvm_thread

T = TypeVar("T")


class Workers:
    """A thread pool for blocking work; ``await workers.run(fn, *args)``."""

    def __init__(self, threads: int, name: str = "search"):
        detach_threads_from_jvm_on_exit()  # every thread the server starts from now on detaches as it ends
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name, initializer=mark_jvm_thread)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._pool, ctx.run, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
