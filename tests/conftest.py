"""Shared fixtures: a tiny real collection, its real Lucene index, and the app over it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny"
REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SEARCH_DATA_DIR", REPO.parent / "shared" / "data"))

TINY_CONFIG = {
    "indexes": {"lucene": {"type": "lucene", "language": "en"}},
    "pipelines": {"bm25": {"stages": [{"type": "bm25", "index": "lucene", "k1": 0.9, "b": 0.4, "cutoff": 100}]}},
}


@pytest.fixture(scope="session")
def tiny_dataset() -> Path:
    return TINY


@pytest.fixture(scope="session")
def tiny_index_root(tmp_path_factory) -> Path:
    """A real Lucene index of the tiny corpus, published like production ones."""
    from indexer.build import ensure_indexes
    from pipeline.registry import parse_config

    root = tmp_path_factory.mktemp("indexes")
    ensure_indexes(TINY, "tiny", parse_config(TINY_CONFIG), ["lucene"], root)
    return root


@pytest.fixture(scope="session")
def tiny_index(tiny_index_root) -> Path:
    return (tiny_index_root / "tiny" / "lucene" / "current").resolve()


@pytest.fixture(scope="session")
def tiny_engine(tiny_index_root):
    from pipeline.registry import parse_config
    from service.engine import Engine

    return Engine(parse_config(TINY_CONFIG), tiny_index_root, REPO / "models", ["tiny"])


@pytest.fixture
def client(tiny_engine):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(collections=["tiny"]), engine=tiny_engine)
    with TestClient(app) as c:
        yield c


def needs_data(name: str) -> Path:
    path = DATA_DIR / name
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"collection {name} not found under {DATA_DIR} (set SEARCH_DATA_DIR)")
    return path
