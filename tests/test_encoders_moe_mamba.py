"""The MoE and Mamba encoders: routing, save/load through pipeline.encoders.bi_encoders, padding, scan paths (tiny random models)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

TEXTS = ["lava is molten rock", "ocean tides follow the moon and the sun", "x"]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from pipeline.encoders.bi_encoders import minilm_path

    return AutoTokenizer.from_pretrained(str(minilm_path()))


@pytest.fixture(scope="module")
def tiny_bert(tokenizer):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    return BertModel(cfg, add_pooling_layer=False).eval()


@pytest.fixture
def moe(tiny_bert, tokenizer):
    from pipeline.encoders.moe import build_moe_module

    return build_moe_module(copy.deepcopy(tiny_bert), tokenizer, ["scifact", "cranfield", "xquad"]).eval()


def _base_embedding(bert, tokenizer, texts):
    from pipeline.encoders.moe import mean_pool

    f = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return mean_pool(bert(**f).last_hidden_state, f["attention_mask"])


def test_moe_starts_equal_to_the_base_model_for_every_domain(moe, tiny_bert, tokenizer):
    ref = _base_embedding(tiny_bert, tokenizer, TEXTS)
    for domain in moe.domains:
        with torch.no_grad():
            out = moe(moe.tokenize(TEXTS, 64, domain))["sentence_embedding"]
        torch.testing.assert_close(out, ref)


def test_routing_sends_each_text_to_its_domain_expert_only(moe):
    with torch.no_grad():
        before = {d: moe(moe.tokenize(TEXTS, 64, d))["sentence_embedding"] for d in moe.domains}
        moe.bert.encoder.layer[1].intermediate.experts[1].dense.weight.add_(torch.randn(64, 32))
        after = {d: moe(moe.tokenize(TEXTS, 64, d))["sentence_embedding"] for d in moe.domains}
        mixed = moe.tokenize(TEXTS, 64, "scifact")
        mixed["domain_ids"] = torch.tensor([1, 0, 2])
        out = moe(mixed)["sentence_embedding"]
    torch.testing.assert_close(after["scifact"], before["scifact"])
    torch.testing.assert_close(after["xquad"], before["xquad"])
    assert (after["cranfield"] - before["cranfield"]).abs().max() > 1e-3
    torch.testing.assert_close(out, torch.stack([after["cranfield"][0], after["scifact"][1], after["xquad"][2]]))


def test_only_the_routed_expert_gets_gradients(moe):
    moe.train()
    out = moe(moe.tokenize(TEXTS, 64, "xquad"))["sentence_embedding"]
    out.pow(2).sum().backward()
    experts = moe.bert.encoder.layer[0].output.experts
    assert experts[2].dense.weight.grad is not None and experts[2].dense.weight.grad.abs().sum() > 0
    assert experts[0].dense.weight.grad is None and experts[1].dense.weight.grad is None


def test_moe_unknown_domain_is_a_config_error(moe):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown MoE domain"):
        moe.tokenize(TEXTS, 64, "medline")
    with pytest.raises(ConfigError, match="distinct domain names"):
        from pipeline.encoders.moe import build_moe_module

        build_moe_module(copy.deepcopy(moe.bert), moe.tokenizer, ["a", "a"])


def test_moe_saved_model_loads_per_domain_through_load_encoder(moe, tmp_path):
    from pipeline.encoders.bi_encoders import load_encoder

    with torch.no_grad():
        moe.bert.encoder.layer[0].output.experts[2].dense.weight.add_(torch.randn(32, 64))
    moe.save(tmp_path / "moe")
    for domain in moe.domains:
        enc = load_encoder(tmp_path / "moe" / "domains" / domain, device="cpu")
        assert enc.dim == 32 and enc.normalize and enc.identity.endswith(f"#{domain}")
        vecs = enc.encode_documents(TEXTS)
        with torch.no_grad():
            ref = torch.nn.functional.normalize(moe(moe.tokenize(TEXTS, 256, domain))["sentence_embedding"], dim=-1)
        np.testing.assert_allclose(vecs, ref.numpy(), atol=1e-5)
        assert vecs.dtype == np.float32 and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    top = load_encoder(tmp_path / "moe", device="cpu")
    assert top.identity.endswith("#scifact")
    a = load_encoder(tmp_path / "moe" / "domains" / "xquad", device="cpu").encode_queries(["lava"])
    b = load_encoder(tmp_path / "moe" / "domains" / "scifact", device="cpu").encode_queries(["lava"])
    assert not np.allclose(a, b, atol=1e-4)


def test_moe_bad_folders_are_config_errors(moe, tmp_path):
    from pipeline.core.errors import ConfigError
    from pipeline.encoders.moe import load

    moe.save(tmp_path / "m")
    view = tmp_path / "m" / "domains" / "other"
    view.mkdir()
    (view / "encoder.json").write_text(json.dumps({"kind": "moe", "domain": "medline", "weights": "../.."}))
    with pytest.raises(ConfigError, match="medline"):
        load(view, "cpu")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "encoder.json").write_text(json.dumps({"kind": "moe", "domains": ["a"]}))
    with pytest.raises(ConfigError, match="no MoE weights"):
        load(tmp_path / "empty", "cpu")
    with pytest.raises(ConfigError, match="expected 'moe'"):
        (tmp_path / "mamba").mkdir()
        (tmp_path / "mamba" / "encoder.json").write_text('{"kind": "mamba"}')
        load(tmp_path / "mamba", "cpu")


@pytest.fixture(scope="module")
def mamba(tokenizer):
    from pipeline.encoders.bi_encoders import minilm_path
    from pipeline.encoders.mamba import new_mamba_module

    torch.manual_seed(0)
    return new_mamba_module(minilm_path(), hidden_size=32, num_layers=2, state_size=8).eval()


def test_mamba_embedding_ignores_padding(mamba):
    with torch.no_grad():
        batch = mamba(mamba.tokenize(TEXTS, 64))["sentence_embedding"]
        single = torch.cat([mamba(mamba.tokenize([t], 64))["sentence_embedding"] for t in TEXTS])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-4)


def test_mamba_parallel_scan_equals_sequential_loop(mamba):
    from pipeline.encoders.mamba import parallel_scan_available

    if not parallel_scan_available():
        pytest.skip("mambapy not installed")
    features = mamba.tokenize(TEXTS, 64)
    loop = copy.deepcopy(mamba)
    for layer in loop.mamba.layers:
        layer.mixer.use_mambapy = False
    with torch.no_grad():
        torch.testing.assert_close(mamba(features)["sentence_embedding"], loop(features)["sentence_embedding"],
                                   atol=1e-4, rtol=1e-3)


def test_mamba_starts_from_given_embeddings_and_refuses_wrong_shapes(tokenizer):
    from pipeline.core.errors import ConfigError
    from pipeline.encoders.bi_encoders import minilm_path
    from pipeline.encoders.mamba import new_mamba_module

    emb = torch.randn(len(tokenizer), 16)
    module = new_mamba_module(minilm_path(), hidden_size=16, num_layers=1, embeddings_from=emb)
    torch.testing.assert_close(module.mamba.get_input_embeddings().weight.detach(), emb)
    with pytest.raises(ConfigError, match="do not fit"):
        new_mamba_module(minilm_path(), hidden_size=8, num_layers=1, embeddings_from=emb)


def test_mamba_roundtrip_through_load_encoder(mamba, tmp_path):
    from pipeline.core.errors import ConfigError
    from pipeline.encoders.bi_encoders import load_encoder

    mamba.save(tmp_path / "mamba", {"query_max_length": 16, "doc_max_length": 64})
    enc = load_encoder(tmp_path / "mamba", device="cpu")
    assert enc.dim == 32 and enc.identity.startswith("mamba:mamba@sha256:")
    with torch.no_grad():
        ref = torch.nn.functional.normalize(mamba(mamba.tokenize(TEXTS, 64))["sentence_embedding"], dim=-1)
    np.testing.assert_allclose(enc.encode_documents(TEXTS), ref.numpy(), atol=1e-5)
    assert enc.encode_queries([]).shape == (0, 32)
    (tmp_path / "mamba" / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="no Mamba weights"):
        load_encoder(tmp_path / "mamba", device="cpu")


@pytest.mark.parametrize("kind", ["moe", "mamba"])
def test_trained_folders_serve_through_the_dense_indexer_and_stage(kind, moe, mamba, tmp_path, tiny_dataset):
    """A model folder named in a faiss index config is indexed and searched like MiniLM."""
    from indexer.build import ensure_indexes
    from pipeline.core.types import Query
    from pipeline.registry import BuildContext, build_pipeline, parse_config

    models = tmp_path / "models"
    if kind == "moe":
        moe.save(models / "moe-tiny")
        spec = "moe-tiny/domains/cranfield"
    else:
        mamba.save(models / "mamba-tiny")
        spec = "mamba-tiny"
    config = parse_config({
        "indexes": {"dense": {"type": "faiss", "model": str(models / spec), "max_length": 64}},
        "pipelines": {"dense": {"stages": [{"type": "dense", "index": "dense", "k": 5}]}},
    })
    root = tmp_path / "indexes"
    manifests = ensure_indexes(tiny_dataset, "tiny", config, ["dense"], root)
    assert manifests["dense"].params["model_identity"].startswith(f"{kind}:")
    assert manifests["dense"].params["dim"] == 32
    pipe = build_pipeline("dense", BuildContext(index_root=root, collection="tiny", config=config, models_dir=models))
    results = pipe([Query("q1", "how do plants make glucose"), Query("q2", "lava from volcanoes")])
    assert set(results) == {"q1", "q2"} and all(len(hits) == 5 for hits in results.values())
    assert all(h.doc_id.startswith("d") for hits in results.values() for h in hits)
