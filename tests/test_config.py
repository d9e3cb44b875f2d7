"""Declarative configs: valid ones load, wrong ones fail naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import ConfigError
from pipeline.registry import load_config, parse_config

REPO = Path(__file__).resolve().parent.parent


def test_shipped_config_is_valid():
    config = load_config(REPO / "configs" / "pipelines.yaml")
    assert "bm25" in config.pipelines


def test_adapted_config_serves_the_adapted_model_beside_the_shipped_one():
    config = load_config(REPO / "configs" / "adapted.yaml")
    models = {name: [s.get("model") for s in p.stages if isinstance(s, dict)] for name, p in config.pipelines.items()}
    assert "ce-adapted" in models["hybrid>>ce-adapted"] and "ce-minilm" in models["hybrid>>ce"]
    # the comparison it exists for: the shipped pipeline exactly as configs/pipelines.yaml serves it, and the adapted
    # model blended at the same weight (2026-12-04: the copy had kept an older weight)
    shipped = load_config(REPO / "configs" / "pipelines.yaml").pipelines["hybrid>>ce"].stages
    assert config.pipelines["hybrid>>ce"].stages == shipped
    adapted = config.pipelines["hybrid>>ce-adapted"].stages
    assert adapted[:-1] == shipped[:-1] and {**adapted[-1], "model": "ce-minilm"} == shipped[-1]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"pipelines": {"p": {"stages": [{"type": "bm25", "index": "lucene", "k1": "high"}]}}, "indexes": {"lucene": {}}},
         "pipelines.p.stages[0].k1"),
        ({"pipelines": {"p": {"stages": [{"type": "bm42"}]}}}, "pipelines.p.stages[0].type: unknown stage type 'bm42'"),
        ({"pipelines": {"p": {"stages": [{"type": "bm25", "index": "nope"}]}}, "indexes": {}},
         "pipelines.p.stages[0].index: 'nope' is not declared"),
        ({"pipelines": {"p": {"stages": [{"type": "bm25", "cutoff": 0}]}}, "indexes": {"lucene": {}}},
         "pipelines.p.stages[0].cutoff"),
        ({"pipelines": {"p": {"stages": []}}}, "pipelines.p.stages"),
        ({"pipelines": {"p": {"stages": [{"type": "bm25", "colour": "red"}]}}, "indexes": {"lucene": {}}},
         "pipelines.p.stages[0].colour"),
        ({"indexes": {"x": {"type": "lucene", "language": 3}}, "pipelines": {"p": {"stages": [{"type": "bm25", "index": "x"}]}}},
         "indexes.x.language"),
        ({"pipelines": {}, "extra": 1}, "extra"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_wrong_config_names_the_field(raw, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(raw)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelines: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
