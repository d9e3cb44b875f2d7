"""Cross-encoder training: curriculum, losses, groups, metrics, mining, and a tiny CPU training run."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import TINY
from training.cross_encoder.curriculum import Heuristic, anneal, difficulty, group_weight, pair_weights
from training.cross_encoder.data.bundle import Bundle, BundleQuery, fused, load_bundle, merge_bundles
from training.cross_encoder.data.groups import Candidate, Group, candidate_table, make_groups
from training.cross_encoder.data.mining import carve_dev, write_json
from training.cross_encoder.ranking_metrics import ndcg_at_k


def tiny_bundle(with_dense: bool = True) -> Bundle:
    """The tiny collection as a bundle: every document ranked for every query (fixed order)."""
    docs = {}
    for line in (TINY / "corpus.jsonl").read_text().splitlines():
        row = json.loads(line)
        docs[row["_id"]] = f"{row['title']} {row['text']}"
    qtexts = {json.loads(x)["_id"]: json.loads(x)["text"] for x in (TINY / "queries.jsonl").read_text().splitlines()}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d6": 2}, "q4": {"d10": 1}}
    ids = sorted(docs)
    queries = []
    for i, (qid, rel) in enumerate(qrels.items()):
        order = ids[i:] + ids[:i]
        bm25 = [(d, 10.0 - r) for r, d in enumerate(order)]
        dense = [(d, 1.0 - r / 20) for r, d in enumerate(reversed(order))] if with_dense else []
        queries.append(BundleQuery(qid, qtexts[qid], "dev" if qid == "q4" else "train", rel, bm25, dense))
    return Bundle({"dataset": "tiny", "split": "test", "dev_queries": 1, "seed": 1, "depth": 12}, docs, queries)


# ---------------------------------------------------------------- curriculum


def test_reciprocal_rank_difficulty():
    assert difficulty(Candidate("d", 1, 1.0), positive=True) == 1.0  # BM25 already ranks it first: easy
    assert difficulty(Candidate("d", 4, 0.5), positive=True) == 0.25
    assert difficulty(Candidate("d", 1, 1.0), positive=False) == 0.0  # top-ranked negative: hardest
    assert difficulty(Candidate("d", None, 0.0), positive=True) == 0.0  # unretrieved positive: hardest
    assert difficulty(Candidate("d", 3, 0.2), positive=False, heuristic=Heuristic.SCORE) == pytest.approx(0.8)


def test_weights_anneal_to_uniform():
    assert anneal(0.2, 0, 100) == pytest.approx(0.2)
    assert anneal(0.2, 50, 100) == pytest.approx(0.6)
    assert anneal(0.2, 100, 100) == 1.0 and anneal(0.2, 500, 100) == 1.0
    assert anneal(0.2, 0, 0) == 1.0  # no curriculum


def test_hard_group_counts_less_early():
    easy = Group("q", Candidate("p", 1, 1.0), (Candidate("n1", 90, 0.1), Candidate("n2", 80, 0.1)))
    hard = Group("q", Candidate("p", 30, 0.2), (Candidate("n1", 1, 1.0), Candidate("n2", 2, 0.9)))
    assert group_weight(hard, 0, 100) < 0.05 < 0.9 < group_weight(easy, 0, 100)
    assert group_weight(hard, 100, 100) == group_weight(easy, 100, 100) == 1.0
    assert len(pair_weights(easy, 0, 100)) == 3


# ---------------------------------------------------------------- losses


def test_listwise_loss_prefers_positive_first():
    torch = pytest.importorskip("torch")
    from training.cross_encoder.losses import Loss, ranking_loss

    good = torch.tensor([[5.0, 0.0, 0.0]])
    bad = torch.tensor([[0.0, 5.0, 0.0]])
    w = torch.ones(1)
    for kind in (Loss.LISTWISE, Loss.PAIRWISE):
        assert ranking_loss(kind, good, w) < ranking_loss(kind, bad, w)
    assert ranking_loss(Loss.LISTWISE, bad, torch.zeros(1)) == 0.0
    pw = torch.ones(1, 3)
    assert ranking_loss(Loss.POINTWISE, good, pw) < ranking_loss(Loss.POINTWISE, bad, pw)


# ---------------------------------------------------------------- data


def test_groups_exclude_positives_and_respect_rank_range():
    bundle = tiny_bundle()
    groups = make_groups(bundle.role("train"), negatives=3, rank_from=2, rank_to=6, retrievers=("bm25",), rng=random.Random(0))
    assert len(groups) == 3
    for g in groups:
        q = next(q for q in bundle.queries if q.qid == g.qid)
        assert g.positive.doc_id in q.positives
        assert all(n.doc_id not in q.positives and 2 <= n.rank <= 6 for n in g.negatives)
        assert len({n.doc_id for n in g.negatives}) == 3


def test_dense_negatives_add_candidates():
    q = tiny_bundle().queries[0]
    bm25_only = candidate_table(q, ("bm25",))
    both = candidate_table(q, ("bm25", "dense"))
    assert set(bm25_only) <= set(both)
    assert any(both[d].rank < bm25_only[d].rank for d in bm25_only)  # dense ranks some documents higher
    with pytest.raises(ValueError, match="unknown retrievers"):
        candidate_table(q, ("splade",))


def test_too_few_negatives_skips_query():
    groups = make_groups(tiny_bundle().role("train"), negatives=50, rank_from=1, rank_to=100, retrievers=("bm25",),
                         rng=random.Random(0))
    assert groups == []


def test_carve_dev_is_deterministic_and_disjoint():
    ids = [str(i) for i in range(50)]
    a, b = carve_dev(ids, 10, seed=3), carve_dev(list(reversed(ids)), 10, seed=3)
    assert a == b and len(a) == 10 and a != carve_dev(ids, 10, seed=4)
    with pytest.raises(ValueError):
        carve_dev(ids, 50, seed=3)


def test_rrf_fusion_rewards_agreement():
    q = BundleQuery("q", "t", "test", {}, [("a", 3.0), ("b", 2.0), ("c", 1.0)], [("b", 0.9), ("d", 0.8), ("a", 0.1)])
    ranked = [d for d, _ in fused(q, depth=4)]
    assert ranked[0] == "b" and set(ranked) == {"a", "b", "c", "d"}


def test_bundle_round_trip_and_bad_file(tmp_path):
    path = tmp_path / "b.json.gz"
    write_json(path, {"meta": {}, "docs": {"d": "x"}, "queries": [
        {"qid": "q", "text": "t", "role": "train", "qrels": {"d": 1}, "bm25": [["d", 1.5]], "dense": []}]})
    b = load_bundle(path)
    assert b.queries[0].bm25 == [("d", 1.5)] and b.role("train")[0].positives == ["d"]
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="mine one"):
        load_bundle(bad)


def test_mine_tiny_collection(tiny_index_root, tmp_path):
    from training.cross_encoder.data.mining import mine

    paths = mine(TINY, tmp_path, tiny_index_root, train_split="test", eval_splits=(), dev_queries=1, seed=0, depth=5)
    bundle = load_bundle(paths[0])
    assert len(bundle.role("dev")) == 1 and len(bundle.role("train")) == 3
    assert len(bundle.docs) == 12
    q2 = next(q for q in bundle.queries if q.qid == "q2")
    assert q2.bm25[0][0] == "d2" and len(q2.bm25) <= 5
    assert [s for _, s in q2.bm25] == sorted((s for _, s in q2.bm25), reverse=True)


def test_mine_eval_only_bundle(tiny_index_root, tmp_path):
    """``--train-split ''``: only eval bundles (an unseen collection to report on)."""
    from training.cross_encoder.data.mining import mine

    paths = mine(TINY, tmp_path, tiny_index_root, train_split="", eval_splits=("test",), dev_queries=1, seed=0, depth=5)
    assert [p.name for p in paths] == ["eval-test.json.gz"]
    assert {q.role for q in load_bundle(paths[0]).queries} == {"test"}


def test_densify_adds_dense_lists_once(tmp_path, monkeypatch):
    """A second densify leaves a densified bundle as it is (a GPU job re-runs it safely); --force recomputes."""
    from training.cross_encoder.data import mining

    encoded = []

    class FakeRanker:  # stands in for MiniLM: the test is about which bundles get written
        def __init__(self, docs, model=None, device=None):
            encoded.append(len(docs))

        def search(self, queries, depth):
            return {q.query_id: [["d", 0.5]] for q in queries}

    monkeypatch.setattr(mining, "DenseRanker", FakeRanker)
    path = tmp_path / "train.json.gz"
    write_json(path, {"meta": {"depth": 5, "dense": None}, "docs": {"d": "x"}, "queries": [
        {"qid": "q", "text": "t", "role": "train", "qrels": {"d": 1}, "bm25": [["d", 1.5]], "dense": []}]})
    assert mining.add_dense([path]) == 1
    assert load_bundle(path).queries[0].dense == [("d", 0.5)]
    assert mining.add_dense([path]) == 0 and encoded == [1]
    assert mining.add_dense([path], force=True) == 1 and encoded == [1, 1]


def test_merge_bundles_namespaces_ids_and_keeps_roles():
    a = tiny_bundle()
    b = Bundle({**a.meta, "dataset": "other", "dev_queries": 2}, dict(a.docs), list(a.queries))
    merged = merge_bundles([a, b])
    assert len(merged.queries) == 8 and len(merged.docs) == 2 * len(a.docs)
    assert {q.qid for q in merged.role("dev")} == {"tiny/q4", "other/q4"}
    q1 = next(q for q in merged.queries if q.qid == "other/q1")
    assert q1.positives == ["other/d1"] and all(d.startswith("other/") for d, _ in q1.bm25 + q1.dense)
    assert merged.docs["other/d1"] == a.docs["d1"]
    assert merged.meta["dataset"] == "tiny+other" and merged.meta["dev_queries"] == 3
    assert merge_bundles([a]) is a
    with pytest.raises(ValueError, match="same dataset"):
        merge_bundles([a, a])


# ---------------------------------------------------------------- metric


def test_ndcg_matches_ir_measures():
    ir_measures = pytest.importorskip("ir_measures")
    rng = random.Random(7)
    qrels = {f"q{i}": {f"d{j}": rng.choice([0, 1, 2]) for j in rng.sample(range(30), 5)} for i in range(20)}
    run = {f"q{i}": {f"d{j}": rng.random() for j in range(30)} for i in range(20)}
    expected = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10]
    judged = {q: r for q, r in qrels.items() if any(v > 0 for v in r.values())}
    assert ndcg_at_k(judged, run) == pytest.approx(expected, abs=1e-9)
    assert ndcg_at_k({"q": {"a": 1}}, {"q": {"a": 2.0, "b": 1.0}}) == 1.0
    assert ndcg_at_k({"q": {"a": 1}}, {}) == 0.0


# ---------------------------------------------------------------- a tiny CPU training run


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer (random weights)."""
    transformers = pytest.importorskip("transformers")
    from training.cross_encoder.model import packaged_minilm

    folder = tmp_path_factory.mktemp("tiny-bert")
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(cfg).save_pretrained(str(folder))
    transformers.AutoTokenizer.from_pretrained(str(packaged_minilm())).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def trained(tiny_base):
    from training.cross_encoder.trainer import TrainConfig, train

    cfg = TrainConfig(negatives=3, rank_to=11, epochs=2, groups_per_batch=2, lr=1e-3, max_length=64, device="cpu",
                      base_model=str(tiny_base), eval_depth=12)
    return cfg, train(cfg, tiny_bundle())


def test_tiny_training_run_learns_and_keeps_best_dev(trained):
    cfg, result = trained
    assert len(result.dev_history) == 2 and result.steps == 4
    assert result.best_dev == max(result.dev_history)
    assert 0.0 <= result.best_dev <= 1.0


def test_training_reduces_loss_on_train_groups(tiny_base):
    """More steps on the same tiny data lower the listwise loss (the model can fit)."""
    import torch

    from training.cross_encoder.losses import Loss, ranking_loss
    from training.cross_encoder.trainer import TrainConfig, _batch_tensors, train

    bundle = tiny_bundle()
    for q in bundle.queries:
        q.role = "train"  # no dev queries: the last epoch is kept
    cfg = TrainConfig(negatives=3, rank_to=11, epochs=12, groups_per_batch=3, lr=3e-3, max_length=64, device="cpu",
                      base_model=str(tiny_base), curriculum=False, patience=100, warmup_fraction=0.0)
    groups = make_groups(bundle.role("train"), 3, 1, 11, ("bm25",), random.Random(5))
    queries = {q.qid: q for q in bundle.queries}

    def loss_of(result):
        result.module.eval()
        with torch.no_grad():
            scores = result.module(*_batch_tensors(groups, queries, bundle.docs, result.cache, cfg, "cpu")).view(len(groups), 4)
        return float(ranking_loss(Loss.LISTWISE, scores, torch.ones(len(groups))))

    short = train(TrainConfig(**{**cfg.to_dict(), "max_steps": 1}), bundle)
    long = train(cfg, bundle)
    assert loss_of(long) < loss_of(short)


def test_saved_model_loads_in_stage_scorer_and_sentence_transformers(trained, tmp_path):
    import torch

    from pipeline.scorers.cross_encoder import CrossEncoderScorer
    from pipeline.scorers.cross_encoder_folder import write_module
    from training.cross_encoder.trainer import score_pairs

    cfg, result = trained
    folder = write_module(result.module, result.tokenizer, tmp_path / "ce", dtype="float32")
    bundle = tiny_bundle()
    pairs = [(bundle.queries[0].text, bundle.docs[d]) for d in ("d1", "d2", "d3")]
    expected = score_pairs(result.module, result.cache, pairs, cfg, "cpu")
    scorer = CrossEncoderScorer(folder, device="cpu", precision="fp32", max_length=64)
    assert scorer.score_pairs(pairs) == pytest.approx(expected, abs=1e-4)
    st = pytest.importorskip("sentence_transformers")
    ce = st.CrossEncoder(str(folder), device="cpu", max_length=64)
    assert list(ce.predict(pairs, convert_to_numpy=True)) == pytest.approx(expected, abs=1e-4)
    assert torch.is_tensor(result.module.head.weight)


def test_cli_train_writes_model_card_and_report(tiny_base, tmp_path):
    from training.__main__ import main
    from training.cross_encoder.data.mining import write_json

    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    b = tiny_bundle()
    rows = [{"qid": q.qid, "text": q.text, "role": q.role, "qrels": q.qrels, "bm25": q.bm25, "dense": q.dense} for q in b.queries]
    write_json(bundle_dir / "train.json.gz", {"meta": b.meta, "docs": b.docs, "queries": rows})
    test_rows = [{**r, "role": "test"} for r in rows]
    write_json(bundle_dir / "eval-test.json.gz", {"meta": b.meta, "docs": b.docs, "queries": test_rows})
    out = tmp_path / "model"
    code = main(["cross-encoder", "train", "--bundle", str(bundle_dir), "--out", str(out), "--base-model", str(tiny_base),
                 "--variants", "listwise+curriculum,pointwise", "--negatives", "3", "--rank-to", "11", "--epochs", "1",
                 "--groups-per-batch", "2", "--max-length", "64", "--device", "cpu", "--code-commit", "abc123"])
    assert code == 0
    report = json.loads((out / "training_report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["listwise+curriculum", "pointwise"]
    assert set(report["chosen"]["test"]) == {"bm25_first_stage", "bm25>>ce", "hybrid_first_stage", "hybrid>>ce",
                                             "zhybrid_first_stage", "zhybrid>>ce"}
    card = (out / "MODEL_CARD.md").read_text()
    assert "abc123" in card and "sha256" in card and "| pointwise |" in card
    assert (out / "2_Dense" / "model.safetensors").is_file()


def test_cli_trains_on_two_collections_and_reports_an_unseen_one(tiny_base, tmp_path):
    from training.__main__ import main
    from training.cross_encoder.data.mining import write_json

    b = tiny_bundle()
    rows = [{"qid": q.qid, "text": q.text, "role": q.role, "qrels": q.qrels, "bm25": q.bm25, "dense": q.dense} for q in b.queries]
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "train.json.gz", {"meta": {**b.meta, "dataset": name}, "docs": b.docs, "queries": rows})
    unseen = tmp_path / "unseen.json.gz"
    write_json(unseen, {"meta": {**b.meta, "dataset": "unseen"}, "docs": b.docs, "queries": [{**r, "role": "test"} for r in rows]})
    out = tmp_path / "model"
    code = main(["cross-encoder", "train", "--bundle", str(tmp_path / "one"), str(tmp_path / "two"),
                 "--extra-eval", str(unseen), "--out", str(out), "--base-model", str(tiny_base), "--negatives", "3",
                 "--rank-to", "11", "--epochs", "1", "--groups-per-batch", "2", "--max-length", "64", "--device", "cpu"])
    assert code == 0
    report = json.loads((out / "training_report.json").read_text())
    assert report["data"]["dataset"] == "one+two" and len(report["data"]["parts"]) == 2
    assert {"unseen:bm25_first_stage", "unseen:bm25>>ce"} <= set(report["chosen"]["test"])
    card = (out / "MODEL_CARD.md").read_text()
    assert "unseen:bm25>>ce" in card and "collection: two" in card


def test_cli_rejects_unknown_variant(tmp_path):
    from training.__main__ import main
    from training.cross_encoder.data.mining import write_json

    write_json(tmp_path / "train.json.gz", {"meta": {}, "docs": {}, "queries": []})
    assert main(["cross-encoder", "train", "--bundle", str(tmp_path), "--out", str(tmp_path / "m"), "--variants", "nope"]) == 2


def write_tiny_bundle(tmp_path):
    """The tiny bundle as a bundle folder (train.json.gz); returns the folder and its query rows."""
    from training.cross_encoder.data.mining import write_json

    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    b = tiny_bundle()
    rows = [{"qid": q.qid, "text": q.text, "role": q.role, "qrels": q.qrels, "bm25": q.bm25, "dense": q.dense} for q in b.queries]
    write_json(bundle_dir / "train.json.gz", {"meta": b.meta, "docs": b.docs, "queries": rows})
    return bundle_dir, rows


def test_cli_init_model_continues_from_a_saved_reranker(tiny_base, tmp_path):
    import torch

    from pipeline.scorers.cross_encoder_folder import read_module as load_trainable
    from pipeline.scorers.cross_encoder_folder import write_module as save_model
    from training.__main__ import main

    bundle_dir, _ = write_tiny_bundle(tmp_path)
    args = ["--bundle", str(bundle_dir), "--variants", "listwise", "--negatives", "3", "--rank-to", "11", "--epochs", "1",
            "--groups-per-batch", "2", "--max-length", "64", "--device", "cpu", "--report-split", ""]
    assert main(["cross-encoder", "train", "--out", str(tmp_path / "first"), "--base-model", str(tiny_base), *args]) == 0
    module, tokenizer = load_trainable(tmp_path / "first")
    with torch.no_grad():
        module.head.weight.fill_(0.5)                     # a head no fresh initialisation would draw
    save_model(module, tokenizer, tmp_path / "first", dtype="float32")
    assert main(["cross-encoder", "train", "--out", str(tmp_path / "second"), "--init-model", str(tmp_path / "first"),
                 "--lr", "1e-9", *args]) == 0
    report = json.loads((tmp_path / "second" / "training_report.json").read_text())
    assert report["chosen"]["config"]["init_model"] == str(tmp_path / "first")
    # a vanishing learning rate keeps the loaded head: it was read from the folder, not drawn anew
    assert torch.allclose(load_trainable(tmp_path / "second")[0].head.weight, torch.full_like(module.head.weight, 0.5),
                          atol=1e-3)


def test_cli_time_budget_stops_training_and_still_saves(tiny_base, tmp_path):
    from training.__main__ import main

    bundle_dir, _ = write_tiny_bundle(tmp_path)
    assert main(["cross-encoder", "train", "--bundle", str(bundle_dir), "--out", str(tmp_path / "m"), "--base-model",
                 str(tiny_base), "--variants", "listwise", "--negatives", "3", "--rank-to", "11", "--epochs", "3",
                 "--groups-per-batch", "2", "--max-length", "64", "--device", "cpu", "--report-split", "",
                 "--max-seconds", "1e-9"]) == 0
    report = json.loads((tmp_path / "m" / "training_report.json").read_text())
    assert report["chosen"]["steps"] == 0 and (tmp_path / "m" / "2_Dense" / "model.safetensors").is_file()


def test_model_is_saved_before_the_reports(tiny_base, tmp_path, monkeypatch):
    """A run stopped during its (long) evaluations still leaves the trained model (a GPU call's deadline)."""
    from training.cross_encoder import ablation
    from training.cross_encoder.trainer import TrainConfig

    def stopped(*args, **kwargs):
        assert (tmp_path / "m" / "2_Dense" / "model.safetensors").is_file()  # saved already
        raise TimeoutError("deadline")

    monkeypatch.setattr(ablation, "evaluate_report", stopped)
    cfg = TrainConfig(negatives=3, rank_to=11, epochs=1, groups_per_batch=2, max_length=64, device="cpu",
                      base_model=str(tiny_base))
    bundle = tiny_bundle()
    with pytest.raises(TimeoutError):
        ablation.run_ablation(cfg, ["listwise"], bundle, bundle, tmp_path / "m")


def test_report_scores_each_pair_once_and_matches_per_stage_scoring(trained):
    """evaluate_report scores the union of the stages' lists once; each stage's run equals scoring it alone."""
    from training.cross_encoder.ablation import first_stages
    from training.cross_encoder.trainer import evaluate_report, rerank_scores

    cfg, result = trained
    bundle = tiny_bundle()
    stages = first_stages(bundle, depth=5)
    report = evaluate_report(result, cfg, bundle, stages, depth=5)
    for name, lists in stages.items():
        alone = rerank_scores(result.module, result.cache, bundle.docs, bundle.queries, lists, cfg, "cpu", 5)
        qrels = {q.qid: q.qrels for q in bundle.queries}
        from training.cross_encoder.ranking_metrics import ndcg_at_k
        assert report[f"{name}>>ce"] == pytest.approx(ndcg_at_k(qrels, alone), abs=1e-6)
