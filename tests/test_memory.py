"""pipeline.runtime.memory: one allocator policy per process, the service's winning over the batch job's."""

from __future__ import annotations

import os
import platform

import pytest

from pipeline.runtime import memory
from pipeline.runtime.memory import ONEDNN_CACHE, allocator_policy, keep_freed_memory, tame_allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.fixture
def fresh_policy(monkeypatch):
    """Each test starts as a new process would: no policy set yet."""
    monkeypatch.setattr(memory, "_policy", None)


def test_tame_allocator_sets_mallopt_and_keeps_an_explicit_onednn_setting(monkeypatch, fresh_policy):
    monkeypatch.delenv(ONEDNN_CACHE, raising=False)
    assert tame_allocator() is True  # glibc on every machine this project runs on (Debian images)
    assert os.environ[ONEDNN_CACHE] == "64"
    monkeypatch.setenv(ONEDNN_CACHE, "7")
    tame_allocator()
    assert os.environ[ONEDNN_CACHE] == "7"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_a_cpu_reranker_loading_after_service_start_keeps_the_tamed_allocator(fresh_policy):
    """The bug: the service set a 64 KiB mmap threshold, then loading the CPU cross-encoder raised it to 1 GiB."""
    assert tame_allocator() is True and allocator_policy() == memory.TAMED
    assert keep_freed_memory() is False
    assert allocator_policy() == memory.TAMED


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_a_batch_job_keeps_freed_memory_once_and_a_later_service_setting_wins(fresh_policy):
    assert keep_freed_memory() is True and allocator_policy() == memory.KEEP_FREED
    assert keep_freed_memory() is True  # idempotent
    assert tame_allocator() is True and allocator_policy() == memory.TAMED
    assert keep_freed_memory() is False and allocator_policy() == memory.TAMED
