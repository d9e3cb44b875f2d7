"""Default locations, overridable by environment variables (no absolute paths in the repo)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def default_index_root() -> Path:
    return Path(os.environ.get("SEARCH_INDEX_ROOT", REPO / "indexes"))


def default_data_dir() -> Path:
    """``$SEARCH_DATA_DIR``, else ``../shared/data`` next to the checkout."""
    return Path(os.environ.get("SEARCH_DATA_DIR", REPO.parent / "shared" / "data"))


def default_config_path() -> Path:
    return Path(os.environ.get("SEARCH_CONFIG", REPO / "configs" / "pipelines.yaml"))


def default_models_dir() -> Path:
    return Path(os.environ.get("SEARCH_MODELS_DIR", REPO / "models"))
