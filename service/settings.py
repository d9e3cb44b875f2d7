"""Service settings from the environment (prefix ``SEARCH_``); nothing is read at import time."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.settings_paths import default_config_path, default_data_dir, default_index_root, default_models_dir


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEARCH_", env_file=None, extra="ignore")

    config: Path = Field(default_factory=default_config_path)
    index_root: Path = Field(default_factory=default_index_root)
    models_dir: Path = Field(default_factory=default_models_dir)
    data_dir: Path = Field(default_factory=default_data_dir)
    collections: list[str] = ["scifact"]
    """Collections served; the first is the default of a request without ``collection``."""
    pipelines: list[str] | None = None
    """Pipelines to load (default: every pipeline in the config)."""
    max_query_chars: int = Field(default=2048, ge=1)
    max_k: int = Field(default=1000, ge=1)
    max_batch: int = Field(default=64, ge=1)
    snippet_chars: int = Field(default=0, ge=0)
    """Truncate returned texts to this many characters (0: full text)."""
