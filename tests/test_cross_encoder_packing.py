"""The padding-free (packed) cross-encoder path against the padded one, on a CPU, and the passage ids cache.

The GPU kernels (flash varlen attention) are exercised by ``gpu/jobs/ce_packed.sh``; here the same packed
module runs with the per-pair reference attention and with nested-tensor SDPA, in fp32: every score within
1e-4 of the padded path's on the shipped model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import REPO, TINY

pytest.importorskip("transformers")

MODEL = REPO / "models" / "ce-minilm"


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    """Pairs of very different lengths (a few words to past max_length), two queries sharing passages."""
    docs = [json.loads(line) for line in (TINY / "corpus.jsonl").read_text().splitlines() if line.strip()]
    texts = [f"{d.get('title', '')} {d['text']}" for d in docs]
    texts += ["lava", " ".join(texts)]  # one word; one passage cut at max_length
    return [(q, t) for q in ("volcanic eruptions and ash clouds", "what is photosynthesis") for t in texts]


@pytest.fixture(scope="module")
def padded():
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    return CrossEncoderScorer(MODEL, device="cpu", precision="fp32", max_length=128)


@pytest.fixture(scope="module")
def packed():
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    return CrossEncoderScorer(MODEL, device="cpu", precision="fp32", max_length=128, packing="on", packed_tokens=600)


def test_cpu_default_stays_padded_and_says_so(padded):
    assert padded.packed is None and padded.token_cache.capacity == 0
    fast = padded.fast_path()
    assert fast["packing"] is False and fast["device"] == "cpu" and "off on a CPU" in fast["packing_note"]


def test_packed_reference_attention_matches_padded_fp32(padded, packed, pairs):
    assert packed.packed.kind == "reference" and packed.fast_path()["packing"] is True
    want, got = padded.score_pairs(pairs), packed.score_pairs(pairs)
    assert np.max(np.abs(np.subtract(want, got))) < 1e-4
    assert len(packed.packed.launch(packed, packed.encode(pairs), None)) > 1  # packed_tokens=600: several batches


def test_packed_nested_attention_matches_padded_fp32(padded, packed, pairs):
    torch = pytest.importorskip("torch")
    if not hasattr(torch.nested, "nested_tensor_from_jagged"):
        pytest.skip("this torch has no jagged nested tensors")
    packed.packed.module.kind = "nested"
    try:
        got = packed.score_pairs(pairs)
    finally:
        packed.packed.module.kind = "reference"
    assert np.max(np.abs(np.subtract(padded.score_pairs(pairs), got))) < 1e-4


def test_packed_bf16_ranks_like_padded_bf16(pairs):
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    a = CrossEncoderScorer(MODEL, device="cpu", precision="bf16", max_length=128)
    b = CrossEncoderScorer(MODEL, device="cpu", precision="bf16", max_length=128, packing="on")
    want, got = np.array(a.score_pairs(pairs)), np.array(b.score_pairs(pairs))
    assert np.max(np.abs(want - got)) < 0.1  # bf16 noise; fp32 above is the exactness check
    assert np.corrcoef(want, got)[0, 1] > 0.999


def test_bf16_logits_are_not_rounded_to_bf16(padded, pairs):
    """The head runs in fp32 after an fp32 mean: bf16 weights, yet scores off the bf16 grid (fewer ties)."""
    torch = pytest.importorskip("torch")
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    for packing in ("off", "on"):
        scores = torch.tensor(CrossEncoderScorer(MODEL, device="cpu", precision="bf16", max_length=128,
                                                 packing=packing).score_pairs(pairs))
        assert (scores != scores.to(torch.bfloat16).float()).sum() >= len(pairs) // 2, packing


def test_fp16_precision_is_closer_to_fp32_than_bf16(padded, pairs):
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    want = np.array(padded.score_pairs(pairs))
    err = {p: np.max(np.abs(want - CrossEncoderScorer(MODEL, device="cpu", precision=p, max_length=128,
                                                      packing="on").score_pairs(pairs))) for p in ("fp16", "bf16")}
    assert CrossEncoderScorer(MODEL, device="cpu", precision="fp16", max_length=128).precision == "fp16"
    assert err["fp16"] < 0.02 and err["fp16"] < err["bf16"] / 2, err


def test_packed_gelu_epilogue_is_close_to_erf(padded, pairs):
    """The FFN's bias + GELU inside the product (the GPU default) is the tanh GELU: close to erf, not equal."""
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    want = np.array(padded.score_pairs(pairs))
    tanh = CrossEncoderScorer(MODEL, device="cpu", precision="fp32", max_length=128, packing="on", packed_gelu_epilogue=True)
    err = np.max(np.abs(want - tanh.score_pairs(pairs)))
    assert 0 < err < 0.05 and tanh.fast_path()["gelu"] == "epilogue (tanh)"
    plain = CrossEncoderScorer(MODEL, device="cpu", precision="fp32", max_length=128, packing="on")
    assert "gelu" not in plain.fast_path()  # off where not asked for, on a CPU


def test_unknown_packed_attention_is_refused_at_load():
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    with pytest.raises(ValueError, match="packed_attention must be"):
        CrossEncoderScorer(MODEL, device="cpu", precision="fp32", max_length=128, packing="on", packed_attention="flex")


def test_packed_arrays_lay_out_pairs_back_to_back():
    from pipeline.scorers.packed_bert import packed_arrays

    rows = [(np.array([7, 8], dtype=np.int32), np.array([1, 2, 3], dtype=np.int32)),
            (np.array([9], dtype=np.int32), np.array([], dtype=np.int32))]
    tokens, cu, longest = packed_arrays(rows, 101, 102)
    assert tokens[0].tolist() == [101, 7, 8, 102, 1, 2, 3, 102, 101, 9, 102, 102]
    assert tokens[1].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1]  # types as pair_token_ids gives them
    assert tokens[2].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]  # positions restart per pair
    assert cu.tolist() == [0, 8, 12] and longest == 8


def test_token_batches_keep_the_token_budget_and_order():
    from pipeline.scorers.packed_bert import token_batches

    assert token_batches([5, 5, 5, 20, 1], batch_tokens=10, batch_size=99) == [[0, 1], [2], [3], [4]]
    assert token_batches([1, 1, 1], batch_tokens=10, batch_size=2) == [[0, 1], [2]]


def test_token_cache_is_lru_and_copies():
    from pipeline.scorers.token_cache import TokenCache

    cache = TokenCache(2)
    big = np.arange(10, dtype=np.int32)
    cache.put_many({"a": big[:2], "b": big[2:4]})
    assert set(cache.get_many(["a"])) == {"a"}  # a is now the most recent
    cache.put_many({"c": big[4:6]})
    assert set(cache.get_many(["a", "b", "c"])) == {"a", "c"}
    assert cache.get_many(["a"])["a"].base is None  # a copy, not a view into the slice
    assert TokenCache(0).get_many(["a"]) == {}


def test_passage_cache_reuses_ids_and_keeps_scores(padded, pairs):
    from pipeline.scorers.cross_encoder import CrossEncoderScorer
    from pipeline.scorers.tokenization import ready_slices

    cached = CrossEncoderScorer(MODEL, device="cpu", precision="fp32", max_length=128, passage_cache=1000)
    first = cached.score_pairs(pairs)
    passages = {p for _, p in pairs}
    assert len(cached.token_cache) == len(passages)
    hits = cached.token_cache.hits
    assert cached.score_pairs(pairs) == first == padded.score_pairs(pairs)
    assert cached.token_cache.hits - hits == len(passages)
    slices = ready_slices(pairs, first_slice=2, chunk_pairs=4, known=passages)
    assert len(slices) == 1 and slices[0][0] == list(dict.fromkeys(q for q, _ in pairs))  # only queries to tokenize
    assert sorted(slices[0][1]) == list(range(len(pairs)))
    fresh = CrossEncoderScorer(MODEL, device="cpu", precision="fp32", max_length=128, passage_cache=1000)
    assert fresh.cache_passages([p for _, p in pairs]) == len(passages) and fresh.cache_passages([pairs[0][1]]) == 0
    assert fresh.score_pairs(pairs) == first and fresh.token_cache.misses == len(passages)  # only the warm-up missed


def test_old_stage_config_loads_with_packing_auto():
    from pipeline.registry import load_config
    from pipeline.stages.cross_encoder import CrossEncoderConfig, engine_options

    config = load_config(REPO / "configs" / "pipelines.yaml")
    stage = CrossEncoderConfig(**config.pipelines["bm25>>ce"].stages[-1])
    options = engine_options(stage, "cpu")
    assert (options.packing, options.passage_cache) == ("auto", None)


def test_self_check_catches_a_wrong_packed_kernel(packed, monkeypatch):
    from pipeline.scorers import packing

    fast = packed.packed.module.fast
    assert packing.self_check(packed, packed.packed, fast) == ""
    monkeypatch.setattr(packed.packed, "launch", lambda scorer, encoded, deadline: [([0, 1], [9.0, 9.0])])
    assert "differ by" in packing.self_check(packed, packed.packed, fast)


def test_packing_on_refuses_when_the_self_check_fails(monkeypatch):
    from pipeline.scorers import packing
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    monkeypatch.setattr(packing, "self_check", lambda scorer, path, fast: "kernel missing")
    with pytest.raises(ValueError, match="self-check .*kernel missing"):
        CrossEncoderScorer(MODEL, device="cpu", precision="fp32", max_length=128, packing="on")
