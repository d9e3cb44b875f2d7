"""Dense indexing (resumable, length-sorted shards; FAISS factories) and the dense retriever stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from indexer.build import ensure_index
from indexer.dense import build_faiss, encode_corpus
from pipeline.core.config import FaissIndexConfig
from pipeline.core.errors import CollectionError, ConfigError, IndexCorruptError, IndexMismatchError
from pipeline.core.testing import StageContract
from pipeline.core.types import Query
from pipeline.encoders.bi_encoders import Encoder, load_encoder
from pipeline.registry import BuildContext, build_pipeline, parse_config
from pipeline.stages.dense import DenseRetriever
from pipeline.storage.index_store import Manifest, publishing, resolve
from tests.conftest import REPO, TINY

CONFIG = {
    "indexes": {"minilm": {"type": "faiss", "model": "minilm", "factory": "Flat"}},
    "pipelines": {"dense": {"stages": [{"type": "dense", "index": "minilm", "k": 10, "cutoff": 10}]}},
}


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return load_encoder("minilm", device="cpu")


@pytest.fixture(scope="module")
def dense_root(tmp_path_factory, minilm) -> Path:
    """A real MiniLM FAISS index of the tiny corpus, published like production ones."""
    root = tmp_path_factory.mktemp("dense-indexes")
    with publishing(root, "tiny", "minilm") as tmp:
        build_faiss(TINY, tmp, FaissIndexConfig(), "tiny", encoder=minilm, shard_size=5)
    return root


@pytest.fixture(scope="module")
def dense_index(dense_root) -> Path:
    return (dense_root / "tiny" / "minilm" / "current").resolve()


class TestDenseContract(StageContract):
    @pytest.fixture
    def stage(self, dense_index, minilm):
        return DenseRetriever.from_index(dense_index, minilm, k=10)


def test_finds_the_obvious_documents(dense_index, minilm):
    dense = DenseRetriever.from_index(dense_index, minilm, k=3)
    res = dense([Query("a", "why does lava come out of a volcano"), Query("b", "what pulls the sea toward the moon")])
    assert res["a"][0].doc_id == "d2" and res["b"][0].doc_id == "d6"
    assert len(res["a"]) == 3 and res["a"][0].stage_scores["dense"] == pytest.approx(res["a"][0].score)


def test_scores_are_cosine_similarities(dense_index, minilm):
    hit = DenseRetriever.from_index(dense_index, minilm, k=1)([Query("q", "volcano lava magma")])["q"][0]
    doc = "Volcanoes A volcano erupts when magma from the mantle rises through the crust and escapes as lava, ash and gas."
    expected = float(minilm.encode_documents([doc])[0] @ minilm.encode_queries(["volcano lava magma"])[0])
    assert hit.doc_id == "d2" and hit.score == pytest.approx(expected, abs=1e-4)


def test_manifest_describes_the_index(dense_index, minilm):
    m = Manifest.read(dense_index)
    assert m.kind == "faiss" and m.doc_count == 12
    assert m.params["model_identity"] == minilm.identity and m.params["dim"] == 384
    assert m.params["metric"] == "inner_product" and m.params["normalize"] is True and m.params["factory"] == "Flat"
    assert json.loads((dense_index / m.params["docid_map"]).read_text())[:2] == ["d1", "d2"]
    assert (dense_index / "docstore.sqlite").is_file()


def test_query_cache_avoids_re_encoding(dense_index, minilm):
    counting = _Counting(minilm)
    dense = DenseRetriever.from_index(dense_index, counting, k=5, cache_size=2)
    first = dense([Query("a", "volcano"), Query("b", "tides")])
    again = dense([Query("c", "volcano"), Query("d", "tides"), Query("e", "volcano")])
    assert counting.queries_encoded == 2  # the second batch came from the cache
    assert [h.doc_id for h in again["c"]] == [h.doc_id for h in first["a"]]
    dense([Query("f", "glaciers")])  # evicts "tides", the least recently used, from a 2-entry cache
    assert len(dense.cache) == 2 and dense.cache.get("tides") is None and dense.cache.get("volcano") is not None


class _DictCache:
    """In-memory stand-in for the service's shared (Redis) query-embedding cache."""

    def __init__(self, broken: bool = False):
        self.data: dict[tuple[str, str], np.ndarray] = {}
        self.broken = broken

    def get_many(self, model, texts):
        if self.broken:
            raise ConnectionError("redis down")
        return {t: self.data[(model, t)] for t in texts if (model, t) in self.data}

    def set_many(self, model, texts, vectors):
        if self.broken:
            raise ConnectionError("redis down")
        self.data.update({(model, t): v for t, v in zip(texts, vectors, strict=True)})


def test_shared_cache_serves_other_replicas(dense_index, minilm):
    shared = _DictCache()
    first = DenseRetriever.from_index(dense_index, minilm, k=3, shared_cache=shared)
    expected = first([Query("a", "volcano")])
    assert list(shared.data) == [(minilm.identity, "volcano")]
    counting = _Counting(minilm)
    replica = DenseRetriever.from_index(dense_index, counting, k=3, shared_cache=shared)
    assert [h.doc_id for h in replica([Query("b", "volcano")])["b"]] == [h.doc_id for h in expected["a"]]
    assert counting.queries_encoded == 0


def test_broken_shared_cache_does_not_fail_search(dense_index, minilm):
    dense = DenseRetriever.from_index(dense_index, minilm, k=3, shared_cache=_DictCache(broken=True))
    assert dense([Query("a", "volcano")])["a"][0].doc_id == "d2"


def test_with_depth_searches_less(dense_index, minilm):
    dense = DenseRetriever.from_index(dense_index, minilm, k=10)
    assert len(dense.with_depth(2)([Query("q", "volcano")])["q"]) == 2
    assert len(dense([Query("q", "volcano")])["q"]) == 10


def test_dense_and_registry_pipeline(dense_root):
    ctx = BuildContext(index_root=dense_root, collection="tiny", config=parse_config(CONFIG), models_dir=REPO / "models")
    res = build_pipeline("dense", ctx).run([Query("q", "antibiotic resistant bacteria")])
    assert res.results["q"][0].doc_id == "d10"


def test_hnsw_and_ivf_factories_build_and_search(tmp_path, minilm):
    for factory, params in (("HNSW8", {"ef_search": 16}), ("IVF2,Flat", {"nprobe": 2})):
        with publishing(tmp_path, "tiny", factory.replace(",", "_")) as tmp:
            build_faiss(TINY, tmp, FaissIndexConfig(factory=factory, train_size=1000), "tiny", encoder=minilm)
        folder, _ = resolve(tmp_path, "tiny", factory.replace(",", "_"))
        dense = DenseRetriever.from_index(folder, minilm, k=3, **params)
        assert dense([Query("q", "why does lava come out of a volcano")])["q"][0].doc_id == "d2", factory


def test_search_parameter_that_does_not_apply_is_a_config_error(dense_index, minilm):
    with pytest.raises(ConfigError, match="efSearch"):
        DenseRetriever.from_index(dense_index, minilm, ef_search=32)  # a Flat index has no efSearch


# --- resumable, length-sorted encoding -------------------------------------------------------


def test_encode_corpus_is_length_sorted_and_resumes(tmp_path, minilm):
    texts = [f"{'word ' * (i % 7)}document number {i}" for i in range(11)]
    reference = minilm.encode_documents(texts)
    failing = _Counting(minilm, fail_on_call=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        encode_corpus(failing, texts, tmp_path / "work", shard_size=4)
    assert sorted(p.name for p in (tmp_path / "work").glob("shard-*.npy")) == ["shard-00000.npy"]
    order = np.load(tmp_path / "work" / "order.npy")
    lengths = minilm.document_lengths([texts[i] for i in order])
    assert lengths == sorted(lengths, reverse=True), "shards are filled longest first"
    resumed = _Counting(minilm)
    vectors = encode_corpus(resumed, texts, tmp_path / "work", shard_size=4)
    assert resumed.documents_encoded == 11 - 4, "the finished shard is not encoded again"
    assert np.allclose(vectors, reference, atol=1e-5), "vectors come back in input order"


def test_interrupted_build_resumes_and_keeps_its_shards(tmp_path, minilm):
    with pytest.raises(RuntimeError, match="interrupted"):
        with publishing(tmp_path, "tiny", "minilm") as tmp:
            build_faiss(TINY, tmp, FaissIndexConfig(), "tiny", encoder=_Counting(minilm, fail_on_call=2), shard_size=5)
    base = tmp_path / "tiny" / "minilm"
    assert not (base / "current").exists() and len(list(base.glob(".work-*/shard-*.npy"))) == 1
    resumed = _Counting(minilm)
    with publishing(tmp_path, "tiny", "minilm") as tmp:
        build_faiss(TINY, tmp, FaissIndexConfig(), "tiny", encoder=resumed, shard_size=5)
    assert resumed.documents_encoded == 12 - 5
    assert (base / "current").exists() and len(list(base.glob(".work-*"))) == 1  # kept as an embedding cache
    reused = _Counting(minilm)
    with publishing(tmp_path, "tiny", "minilm") as tmp:  # another factory: no re-encoding
        build_faiss(TINY, tmp, FaissIndexConfig(factory="HNSW8"), "tiny", encoder=reused, shard_size=5)
    assert reused.documents_encoded == 0 and Manifest.read((base / "current").resolve()).params["factory"] == "HNSW8"


# --- bad input: clear errors, published index left in place -----------------------------------


def _published(root: Path) -> tuple[Path, str]:
    folder, manifest = resolve(root, "tiny", "minilm")
    return folder, manifest.version


def _copy_published(dense_root: Path, tmp_path: Path) -> Path:
    shutil.copytree(dense_root, tmp_path / "root", symlinks=True)
    return tmp_path / "root"


@pytest.mark.parametrize("corpus, error", [
    ("", "empty"),
    ('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', "duplicate document id 'a'"),
])
def test_bad_collection_fails_and_keeps_the_published_index(tmp_path, dense_root, minilm, corpus, error):
    root = _copy_published(dense_root, tmp_path)
    before = _published(root)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corpus.jsonl").write_text(corpus)
    with pytest.raises(CollectionError, match=error):
        ensure_index(bad, "tiny", "minilm", FaissIndexConfig(), root, force=True)
    assert _published(root) == before
    assert DenseRetriever.from_index(before[0], minilm)([Query("q", "volcano")])["q"][0].doc_id == "d2"


def test_index_built_with_another_model_is_refused(dense_index, minilm):
    other = _Counting(minilm)
    other.identity = "sentence-transformers:some-other-model@sha256:0123456789abcdef"
    with pytest.raises(IndexMismatchError, match="was built with sentence-transformers:all-MiniLM-L6-v2"):
        DenseRetriever.from_index(dense_index, other)


def test_index_of_another_dimension_is_refused(dense_index):
    with pytest.raises(IndexMismatchError, match="384-d vectors .* makes 8-d"):
        DenseRetriever.from_index(dense_index, _Random(8))


def test_lucene_index_is_refused(tiny_index, minilm):
    with pytest.raises(IndexMismatchError, match="'lucene' index"):
        DenseRetriever.from_index(tiny_index, minilm)


def test_truncated_faiss_file_is_a_clear_error(tmp_path, dense_root, minilm):
    root = _copy_published(dense_root, tmp_path)
    folder, _ = _published(root)
    path = folder / "faiss.index"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(IndexCorruptError, match="faiss.index has .* bytes, manifest says"):
        DenseRetriever.from_index(folder, minilm)  # caught by the manifest's recorded size
    manifest = Manifest.read(folder)
    manifest.files["faiss.index"] = path.stat().st_size  # even when the size matches, FAISS's own check
    (folder / "manifest.json").write_text(manifest.to_json())
    with pytest.raises(IndexCorruptError, match="truncated or corrupt"):
        DenseRetriever.from_index(folder, minilm)


def test_untrainable_factory_fails_and_keeps_the_published_index(tmp_path, dense_root, minilm):
    root = _copy_published(dense_root, tmp_path)
    before = _published(root)
    with pytest.raises(ConfigError, match="could not be trained on 12 vectors"):
        ensure_index(TINY, "tiny", "minilm", FaissIndexConfig(factory="IVF4,PQ8"), root, force=True)
    with pytest.raises(ConfigError, match="invalid FAISS factory"):
        ensure_index(TINY, "tiny", "minilm", FaissIndexConfig(factory="NoSuchIndex"), root, force=True)
    assert _published(root) == before and not list((root / "tiny" / "minilm").glob(".building-*"))


class _Counting(Encoder):
    """Wraps a real encoder, counting calls; can raise on the n-th document batch (an interruption)."""

    def __init__(self, inner: Encoder, fail_on_call: int | None = None):
        self.inner, self.fail_on_call, self.calls = inner, fail_on_call, 0
        self.dim, self.identity, self.normalize = inner.dim, inner.identity, inner.normalize
        self.queries_encoded = self.documents_encoded = 0

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        self.queries_encoded += len(texts)
        return self.inner.encode_queries(texts)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("interrupted")
        self.documents_encoded += len(texts)
        return self.inner.encode_documents(texts)

    def document_lengths(self, texts: list[str]) -> list[int]:
        return self.inner.document_lengths(texts)


class _Random(Encoder):
    def __init__(self, dim: int):
        self.dim, self.identity, self.normalize = dim, f"random-{dim}", True

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return np.random.default_rng(0).standard_normal((len(texts), self.dim)).astype(np.float32)

    encode_documents = encode_queries


@pytest.mark.slow
@pytest.mark.parametrize("pipeline, low, high", [("dense", 0.640, 0.650), ("hybrid", 0.715, 1.0)])
def test_scifact_test_ndcg_regression(pipeline, low, high):
    """configs/pipelines.yaml on SciFact test: dense = MTEB's 0.6451 +/- 0.005, hybrid >= 0.715."""
    from eval.runner import run_eval
    from pipeline.core.settings_paths import default_index_root
    from pipeline.registry import load_config
    from tests.conftest import needs_data

    res = run_eval(needs_data("scifact"), "test", pipeline, load_config(REPO / "configs" / "pipelines.yaml"),
                   default_index_root(), REPO / "models")
    assert low <= res.metrics["nDCG@10"] <= high, res.metrics


def test_encode_progress_moves_within_a_shard(tmp_path, monkeypatch, minilm):
    """The bar advances after every few encoder batches, not once per 4,096-document shard."""
    import indexer.dense as dense

    updates = []

    class Bar:
        def update(self, n):
            updates.append(n)

        def close(self):
            pass

    monkeypatch.setattr(dense, "progress", lambda total, desc: Bar())
    monkeypatch.setattr(dense, "progress_step", lambda encoder: 3)
    texts = [f"document {i}" for i in range(10)]
    counting = _Counting(minilm)
    vectors = encode_corpus(counting, texts, tmp_path / "work", shard_size=8)
    assert updates == [3, 3, 2, 2] and counting.calls == 4
    assert np.allclose(vectors, minilm.encode_documents(texts), atol=1e-5)
    updates.clear()
    encode_corpus(_Counting(minilm), texts, tmp_path / "work", shard_size=8)  # resumed: whole shards loaded
    assert updates == [8, 2]
