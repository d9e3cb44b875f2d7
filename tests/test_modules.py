"""Language/ranking modules: loading (peft LoRA, SFTM), exact in-place swap, isolation under concurrency."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pipeline.core.errors import ModelNotFoundError  # noqa: E402
from pipeline.scorers.language_modules import (  # noqa: E402
    LowRank,
    Module,
    ModuleMismatchError,
    ModuleRegistry,
    Replace,
    Sparse,
    load_module,
    save_sftm,
    sparse_difference,
)


def tiny_model(seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=1)
    return BertForSequenceClassification(config).eval()


def random_module(model, name: str, seed: int, scale: float = 0.5) -> Module:
    """A module with a low-rank, a sparse and a replaced tensor, all large enough to change the logits."""
    g = torch.Generator().manual_seed(seed)
    q = "bert.encoder.layer.0.attention.self.query.weight"
    dense = "bert.encoder.layer.1.output.dense.weight"
    n = model.get_parameter(dense).numel()
    return Module(name, "lora", {
        q: LowRank(torch.randn(4, 32, generator=g) * scale, torch.randn(32, 4, generator=g) * scale, 2.0),
        dense: Sparse(torch.randperm(n, generator=g)[: n // 10], torch.randn(n // 10, generator=g) * scale),
        "classifier.weight": Replace(torch.randn(1, 32, generator=g)),
    })


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits[:, 0]


IDS = torch.tensor([[1, 5, 9, 14, 2, 30, 31, 2], [1, 7, 7, 22, 2, 40, 41, 2]])


@pytest.mark.parametrize("merge_lora", [True, False])
def test_activation_changes_the_output_and_restores_the_base_exactly(merge_lora):
    model = tiny_model()
    before, base_out = state(model), logits(model, IDS)
    registry = ModuleRegistry(model, merge_lora=merge_lora)
    registry.add(random_module(model, "de", 1))
    for _ in range(5):
        with registry.activated(["de"]):
            assert not torch.allclose(logits(model, IDS), base_out)
    after = state(model)
    assert all(torch.equal(before[k], after[k]) for k in before), "weights drifted after apply/remove"


@pytest.mark.parametrize("merge_lora", [True, False])
def test_composition_order_and_exact_undo_of_overlapping_modules(merge_lora):
    model = tiny_model()
    before = state(model)
    registry = ModuleRegistry(model, merge_lora=merge_lora)
    ranking, lang = random_module(model, "ranking", 1), random_module(model, "de", 2)
    registry.add(ranking)
    registry.add(lang)
    with registry.activated(["ranking", "de"]):
        composed = logits(model, IDS)
    reference = copy.deepcopy(model)  # apply the same deltas by hand, in order
    params = dict(reference.named_parameters())
    with torch.no_grad():
        for module in (ranking, lang):
            for name, delta in module.deltas.items():
                if isinstance(delta, LowRank):
                    params[name].add_(delta.b @ delta.a * delta.scale)
                elif isinstance(delta, Sparse):
                    params[name].view(-1).index_add_(0, delta.index, delta.values)
                else:
                    params[name].copy_(delta.values)
    assert torch.allclose(composed, logits(reference, IDS), atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in state(model).items())


@pytest.mark.parametrize("merge_lora", [True, False])
def test_kept_activation_stays_until_other_modules_are_asked_for(merge_lora, monkeypatch):
    """``keep=True``: the same module list again costs no re-apply; another list, reset() or add() restore first."""
    import pipeline.scorers.language_modules as lm

    model = tiny_model()
    before, base_out = state(model), logits(model, IDS)
    registry = ModuleRegistry(model, merge_lora=merge_lora)
    registry.add(random_module(model, "ranking", 1))
    registry.add(random_module(model, "de", 2))
    fresh = ModuleRegistry(copy.deepcopy(model), merge_lora=merge_lora)  # the reference: plain activations
    fresh.add(random_module(model, "ranking", 1))
    fresh.add(random_module(model, "de", 2))
    expected = {}
    for names in (("ranking", "de"), ("ranking",), ()):
        with fresh.activated(list(names)):
            expected[names] = logits(fresh.model, IDS)
    applied = []
    real_apply = lm._apply
    monkeypatch.setattr(lm, "_apply", lambda param, delta: applied.append(1) or real_apply(param, delta))
    with registry.activated(["ranking", "de"], keep=True):
        assert torch.equal(logits(model, IDS), expected[("ranking", "de")])
    count = len(applied)
    assert merge_lora is False or count > 0
    assert torch.equal(logits(model, IDS), expected[("ranking", "de")])  # still applied after the block
    with registry.activated(["ranking", "de"], keep=True):  # the same list: nothing applied again
        assert torch.equal(logits(model, IDS), expected[("ranking", "de")])
    assert len(applied) == count
    with registry.activated(["ranking"]):  # another list: the kept one is undone first, then this one applied
        assert torch.allclose(logits(model, IDS), expected[("ranking",)], atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in state(model).items())  # keep=False: pristine after the block
    with registry.activated(["de"], keep=True):
        pass
    registry.reset()
    assert all(torch.equal(before[k], v) for k, v in state(model).items()) and torch.equal(logits(model, IDS), base_out)
    with registry.activated(["ranking", "de"], keep=True):
        pass
    with registry.activated(["ranking", "de"], keep=True):  # -> [ranking, es]: only de is undone, ranking stays
        pass
    registry.add(random_module(model, "es", 3))  # add() restores the base before reading its values
    fresh.add(random_module(model, "es", 3))
    with fresh.activated(["ranking", "es"]):
        expected[("ranking", "es")] = logits(fresh.model, IDS)
    applied.clear()
    with registry.activated(["ranking", "de"], keep=True):
        pass
    first = len(applied)
    with registry.activated(["ranking", "es"], keep=True):
        assert torch.allclose(logits(model, IDS), expected[("ranking", "es")], atol=1e-6)
    assert len(applied) - first == len(random_module(model, "es", 3).deltas) - (0 if merge_lora else 1)
    with registry.activated(["ranking", "de"], keep=True):
        assert torch.allclose(logits(model, IDS), expected[("ranking", "de")], atol=1e-6)
    registry.reset()
    assert all(torch.equal(before[k], v) for k, v in state(model).items())
    assert all(torch.equal(before[k], v) for k, v in state(model).items())
    with registry.activated(["ranking", "de"]):
        assert torch.allclose(logits(model, IDS), expected[("ranking", "de")], atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in state(model).items())


def test_weights_come_back_when_the_forward_pass_fails():
    model = tiny_model()
    before = state(model)
    registry = ModuleRegistry(model)
    registry.add(random_module(model, "de", 1))
    with pytest.raises(RuntimeError, match="boom"):
        with registry.activated(["de"]):
            raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in state(model).items())


def test_unknown_module_name_is_a_key_error():
    registry = ModuleRegistry(tiny_model())
    with pytest.raises(KeyError, match="not loaded"):
        with registry.activated(["fr"]):
            pass


@pytest.mark.parametrize("delta, message", [
    ({"bert.nope.weight": Replace(torch.zeros(1))}, "lacks"),
    ({"classifier.weight": Replace(torch.zeros(2, 32))}, "shape"),
    ({"bert.encoder.layer.0.attention.self.query.weight": LowRank(torch.zeros(4, 16), torch.zeros(32, 4), 1.0)}, "adapter makes"),
    ({"classifier.bias": Sparse(torch.tensor([5]), torch.tensor([1.0]))}, "past its"),
])
def test_a_module_that_does_not_fit_the_base_is_refused(delta, message):
    registry = ModuleRegistry(tiny_model())
    with pytest.raises(ModuleMismatchError, match=message):
        registry.add(Module("bad", "sftm", delta))
    assert "bad" not in registry


def test_sparse_difference_keeps_the_most_changed_weights():
    base = {"a": torch.zeros(10), "b": torch.zeros(2, 5)}
    tuned = {"a": torch.arange(10, dtype=torch.float32), "b": -torch.arange(10, dtype=torch.float32).view(2, 5) * 0.5}
    out = sparse_difference(base, tuned, density=0.2)  # 4 of 20 weights
    assert sorted(out["a"].index.tolist()) == [6, 7, 8, 9]
    assert "b" not in out
    with pytest.raises(ValueError):
        sparse_difference(base, tuned, density=0)


def test_sparse_difference_keeps_exactly_k_under_ties():
    """Adam moves many weights by the same step: ties at the threshold must not inflate the mask."""
    base = {"a": torch.zeros(1000)}
    tuned = {"a": torch.full((1000,), 1e-3)}
    out = sparse_difference(base, tuned, density=0.01)
    assert out["a"].index.numel() == 10


def test_sftm_round_trip_is_compact(tmp_path: Path):
    model = tiny_model()
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    deltas = sparse_difference(dict(model.named_parameters()), dict(tuned.named_parameters()), density=0.01)
    path = save_sftm(tmp_path / "de", deltas, {"density": 0.01})
    module = load_module(tmp_path / "de")
    assert module.kind == "sftm" and module.name == "de" and module.label == "sftm:de"
    kept = sum(d.index.numel() for d in module.deltas.values())
    total = sum(p.numel() for p in model.parameters())
    assert kept == max(1, int(total * 0.01))
    assert path.stat().st_size < kept * 6 + 8192  # int32 index + bf16 value per kept weight, plus header
    for name, delta in deltas.items():
        assert torch.equal(module.deltas[name].index, delta.index)
        assert torch.allclose(module.deltas[name].values, delta.values, rtol=1e-2)


def test_peft_lora_folder_gives_the_same_logits_as_peft(tmp_path: Path):
    peft = pytest.importorskip("peft")
    base = tiny_model()
    trained = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value", "dense"], modules_to_save=["classifier"]))
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.normal_(std=0.2)
    trained.save_pretrained(str(tmp_path / "de"))
    expected = logits(trained, IDS)
    registry = ModuleRegistry(base)
    registry.add(load_module(tmp_path / "de"))
    with registry.activated(["de"]):
        assert torch.allclose(logits(base, IDS), expected, atol=1e-5)
    assert not torch.allclose(logits(base, IDS), expected, atol=1e-3)


def test_missing_module_folder(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="python -m training adapters"):
        load_module(tmp_path / "xx")


@pytest.mark.parametrize("merge_lora", [True, False])
def test_interleaved_concurrent_requests_never_see_another_language(merge_lora):
    """Threads scoring different languages at once each get exactly their language's sequential result."""
    model = tiny_model()
    registry = ModuleRegistry(model, merge_lora=merge_lora)
    langs = ["de", "es", "ar", "zh"]
    for i, lang in enumerate(langs):
        registry.add(random_module(model, lang, 10 + i, scale=1.0))
    ids = torch.randint(3, 120, (16, 24), generator=torch.Generator().manual_seed(0))

    def run(names):
        with registry.activated(names), torch.no_grad():
            return model(input_ids=ids).logits[:, 0].clone()

    expected = {lang: run([lang]) for lang in langs}
    expected["base"] = run([])
    assert len({tuple(v.tolist()) for v in expected.values()}) == len(expected), "modules must differ"
    failures: list[str] = []
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        for step in range(25):
            lang = (langs + ["base"])[(k + step) % 5]
            got = run([] if lang == "base" else [lang])
            if not torch.allclose(got, expected[lang], atol=1e-6):
                failures.append(f"thread {k} step {step} ({lang})")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
