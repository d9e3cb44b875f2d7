"""Threads that call into the JVM detach from it as they end (pipeline/runtime/java.py), with jnius faked."""

import sys
import threading
import types

import pytest

from pipeline.runtime.java import detach_threads_from_jvm_on_exit, mark_jvm_thread


@pytest.fixture
def detached(monkeypatch):
    calls: list[int] = []
    monkeypatch.setitem(sys.modules, "jnius", types.SimpleNamespace(detach=lambda: calls.append(threading.get_ident())))
    return calls


def _run(thread: threading.Thread) -> int:
    thread.start()
    thread.join()
    return thread.ident


def test_marked_thread_detaches_in_itself_as_it_ends(detached, monkeypatch):
    """A thread started before the hook (or the hook undone, as here) detaches once marked."""
    unhooked = getattr(threading.Thread._bootstrap_inner, "original", threading.Thread._bootstrap_inner)
    monkeypatch.setattr(threading.Thread, "_bootstrap_inner", unhooked)
    assert _run(threading.Thread(target=lambda: None)) not in detached
    seen = []
    ident = _run(threading.Thread(target=lambda: (mark_jvm_thread(), seen.append(threading.get_ident()))))
    assert seen == [ident] and ident in detached


def test_unmarked_work_on_the_main_thread_never_detaches(detached):
    mark_jvm_thread()  # the main thread lives as long as the JVM: nothing to detach
    assert threading.get_ident() not in detached


def test_hook_covers_threads_that_override_run(detached):
    """anyio's worker threads override ``run``; the hook wraps what every thread runs."""

    class Worker(threading.Thread):
        def run(self):
            pass

    detach_threads_from_jvm_on_exit()
    assert _run(Worker()) in detached
    assert _run(threading.Thread(target=lambda: None)) in detached


def test_native_signal_handlers_are_put_back_after_the_block():
    import signal

    from pipeline.runtime.java import keep_native_signal_handlers, native_handlers, start_jvm

    start_jvm()
    before = native_handlers(["SIGBUS"])
    assert before is not None
    previous = signal.getsignal(signal.SIGBUS)
    try:
        with keep_native_signal_handlers(["SIGBUS"]):
            signal.signal(signal.SIGBUS, signal.SIG_DFL)  # what ray.shutdown does to the JVM's handler
            assert native_handlers(["SIGBUS"])[signal.SIGBUS].handler != before[signal.SIGBUS].handler
        assert native_handlers(["SIGBUS"])[signal.SIGBUS].handler == before[signal.SIGBUS].handler
    finally:
        if previous is not None and native_handlers(["SIGBUS"])[signal.SIGBUS].handler != before[signal.SIGBUS].handler:
            signal.signal(signal.SIGBUS, previous)


def test_importing_the_module_patches_nothing():
    """The hook is installed by start_jvm or a server, never as a side effect of an import."""
    import subprocess

    code = ("import threading; original = threading.Thread._bootstrap_inner; import pipeline.runtime.java; "
            "assert threading.Thread._bootstrap_inner is original")
    subprocess.run([sys.executable, "-c", code], check=True)
