"""pipeline.runtime.memory: allocator settings for long-running processes."""

from __future__ import annotations

import os

from pipeline.runtime.memory import ONEDNN_CACHE, tame_allocator


def test_tame_allocator_sets_mallopt_and_keeps_an_explicit_onednn_setting(monkeypatch):
    monkeypatch.delenv(ONEDNN_CACHE, raising=False)
    assert tame_allocator() is True  # glibc on every machine this project runs on (Debian images)
    assert os.environ[ONEDNN_CACHE] == "64"
    monkeypatch.setenv(ONEDNN_CACHE, "7")
    tame_allocator()
    assert os.environ[ONEDNN_CACHE] == "7"
