"""Token pruning inside the fast BERT cross-encoder (issue 23): which tokens leave, and what does not change."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pipeline.scorers.fast_bert import fast_bert_scorer  # noqa: E402


@pytest.fixture(scope="module")
def module():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=200, max_position_embeddings=128)
    return fast_bert_scorer(transformers.BertModel(cfg).eval(), torch.nn.Linear(32, 1)).eval()


def pair(query_len: int, passage_len: int, seed: int):
    """``[CLS] query [SEP] passage [SEP]`` ids and token types."""
    g = torch.Generator().manual_seed(seed)
    ids = [101] + torch.randint(5, 100, (query_len,), generator=g).tolist() + [102]
    ids += torch.randint(5, 100, (passage_len,), generator=g).tolist() + [102]
    types = [0] * (query_len + 2) + [1] * (passage_len + 1)
    return ids, types


def batch(pairs):
    width = max(len(ids) for ids, _ in pairs)
    ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in pairs])
    types = torch.tensor([t + [0] * (width - len(t)) for _, t in pairs])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in pairs])
    return ids, types, mask


def score(module, pairs, layer=None, keep=1.0):
    module.prune_layer, module.prune_keep = layer, keep
    try:
        with torch.inference_mode():
            return module(*batch(pairs))
    finally:
        module.prune_layer, module.prune_keep = None, 1.0


PAIRS = [pair(4, 40, 1), pair(7, 25, 2), pair(3, 60, 3), pair(5, 9, 4)]


def test_keeping_every_token_scores_as_the_unpruned_module(module):
    want = score(module, PAIRS)
    torch.testing.assert_close(score(module, PAIRS, layer=1, keep=0.9999), want, atol=1e-5, rtol=1e-5)


def test_a_pruned_pair_scores_the_same_alone_and_padded_in_a_batch(module):
    together = score(module, PAIRS, layer=1, keep=0.5)
    alone = torch.cat([score(module, [p], layer=1, keep=0.5) for p in PAIRS])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert (together - score(module, PAIRS)).abs().max() > 1e-4  # pruning changed the scores: the test has teeth


def test_the_query_segment_stays_and_the_kept_share_of_the_passage_is_rounded_up(module):
    from pipeline.scorers.fast_bert import prune_tokens

    ids, types, mask = batch(PAIRS)
    with torch.inference_mode():
        x = module.emb_ln(module.word(ids) + module.token_type(types) + module.position(torch.arange(ids.shape[1]))[None])
        kept_x, kept_mask = prune_tokens(module.layers[0], x, types, mask, 0.5)
    for row, (q, p) in enumerate([(4, 40), (7, 25), (3, 60), (5, 9)]):
        passage = p + 1  # with the final [SEP]
        assert int(kept_mask[row].sum()) == q + 2 + -(-passage // 2)
        torch.testing.assert_close(kept_x[row, : q + 2], x[row, : q + 2])  # the query segment, first and in order
    with torch.inference_mode():
        _, kept_mask = prune_tokens(module.layers[0], x, types, mask, 0.5, minimum=30)
    for row, (q, p) in enumerate([(4, 40), (7, 25), (3, 60), (5, 9)]):  # at least 30 passage tokens, or all of them
        assert int(kept_mask[row].sum()) == q + 2 + max(-(-(p + 1) // 2), min(p + 1, 30))



from tests.test_cross_encoder_stage import tiny_model  # noqa: E402,F401  (fixture)


def test_the_engine_prunes_when_configured_and_says_so(tiny_model):  # noqa: F811
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    pairs = [("volcano magma", "Lava flows from the volcano after magma rises through the crust " * 4),
             ("ocean tides", "The moon pulls the oceans and the tides follow its gravity " * 4)]
    plain = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", max_length=64)
    pruned = CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", max_length=64, prune_layer=1, prune_keep=0.4)
    assert "token_pruning" not in plain.fast_path()
    assert pruned.fast_path()["token_pruning"] == {"layer": 1, "keep": 0.4, "min_tokens": 0}
    assert max(abs(a - b) for a, b in zip(plain.score_pairs(pairs), pruned.score_pairs(pairs), strict=True)) > 1e-5


def test_pruning_a_module_that_cannot_prune_is_a_value_error(tiny_model):  # noqa: F811
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    with pytest.raises(ValueError, match="layers 0..1"):
        CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", prune_layer=2, prune_keep=0.5)
    with pytest.raises(ValueError, match="fast BERT path"):
        CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", fast=False, prune_layer=1, prune_keep=0.5)
    CrossEncoderScorer(tiny_model, device="cpu", precision="fp32", fast=False, prune_layer=1, prune_keep=1.0)  # keep 1: off


def test_the_stage_config_bounds_the_pruning_settings():
    from pipeline.stages.cross_encoder import CrossEncoderConfig

    assert CrossEncoderConfig().prune_layer is None and CrossEncoderConfig().prune_keep == 1.0
    for bad in ({"prune_keep": 0}, {"prune_keep": 1.5}, {"prune_layer": -1}, {"prune_layer": "two"}, {"prune_min": -1}):
        with pytest.raises(ValueError):
            CrossEncoderConfig(**bad)
