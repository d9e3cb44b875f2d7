"""Training data beyond one collection (issue 19): local corpora, title pseudo-queries, the hybrid teacher."""

from __future__ import annotations

import json

import pytest

from tests.test_training_cross_encoder import TINY, tiny_base, tiny_bundle  # noqa: F401 - fixture reused


def test_debian_records_join_continuation_lines_and_skip_boilerplate():
    from training.cross_encoder.data.local_corpora import parse_debian_records

    records = ("Package: at\nDescription-md5: x\nDescription-en: Delayed job execution\n first line\n .\n second line\n\n"
               "Package: nolong\nDescription-en: Only a title\n")
    docs = list(parse_debian_records(records))
    assert docs == [{"_id": "at", "title": "Delayed job execution", "text": "first line second line"},
                    {"_id": "nolong", "title": "Only a title", "text": ""}]


def test_debian_descriptions_refuse_a_list_without_long_texts():
    from training.cross_encoder.data.local_corpora import debian_descriptions

    with pytest.raises(ValueError, match="Acquire::Languages=en"):
        debian_descriptions(10, records="Package: a\nDescription: short only\n")


def test_debian_descriptions_sample_is_seeded_and_filtered():
    from training.cross_encoder.data.local_corpora import debian_descriptions

    body = " ".join(["word"] * 30)
    recs = "\n\n".join(f"Package: p{i}{'-dev' if i % 5 == 0 else ''}\nDescription-en: title {i}\n {body}"
                       for i in range(300))
    a, b = debian_descriptions(50, seed=1, records=recs), debian_descriptions(50, seed=1, records=recs)
    assert a == b and len(a) == 50
    assert not any(d["_id"].endswith("-dev") for d in a)


def test_man_page_parser_takes_name_summary_and_description():
    from training.cross_encoder.data.local_corpora import parse_man_page

    page = ("LS(1)   User Commands   LS(1)\n\nNAME\n       ls - list directory contents\n\nSYNOPSIS\n       ls [OPTION]\n\n"
            "DESCRIPTION\n       " + " ".join(["List information about the FILEs."] * 6) + "\n\nAUTHOR\n       someone\n")
    doc = parse_man_page(page)
    assert doc["title"] == "list directory contents"
    assert doc["text"].startswith("List information about the FILEs.") and "someone" not in doc["text"]
    assert parse_man_page("NAME\n  x\n") is None


def test_strip_title_removes_a_leading_copy_only():
    from training.cross_encoder.data.pseudo_queries import strip_title

    assert strip_title("the boundary layer .", "the boundary layer . the equations are given .") == "the equations are given ."
    assert strip_title("Wing flutter", "A study of wing flutter") == "A study of wing flutter"


def test_title_dataset_is_a_beir_folder_without_titles(tmp_path):
    from pipeline.storage.collection import iter_corpus, load_qrels, load_queries
    from training.cross_encoder.data.pseudo_queries import write_title_dataset

    src = tmp_path / "src"
    src.mkdir()
    long = " ".join(f"w{i}" for i in range(30))
    docs = [{"_id": "a", "title": "heat transfer in laminar flow", "text": f"heat transfer in laminar flow . {long}"},
            {"_id": "b", "title": "x", "text": long},                                 # too short a title
            {"_id": "c", "title": "shock wave boundary layer interaction", "text": f"we study {long}"}]
    (src / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    info = write_title_dataset(src, tmp_path / "out")
    assert info["queries"] == 2 and info["documents"] == 3
    corpus = {d.doc_id: d for d in iter_corpus(tmp_path / "out")}
    assert all(d.title == "" for d in corpus.values())
    assert corpus["a"].text.startswith("w0")                                         # the repeated title is gone
    qrels = load_qrels(tmp_path / "out", "train")
    queries = load_queries(tmp_path / "out")
    assert qrels == {"t-a": {"a": 1}, "t-c": {"c": 1}}
    assert queries["t-a"].text == "heat transfer in laminar flow"


def test_sentence_dataset_moves_one_sentence_out_of_its_document(tmp_path):
    from pipeline.storage.collection import iter_corpus, load_qrels, load_queries
    from training.cross_encoder.data.pseudo_queries import write_pseudo_dataset

    src = tmp_path / "src"
    src.mkdir()
    filler = " ".join(f"w{i}" for i in range(12))
    body = f"First claim about {filler}. Second claim about {filler}. Third claim about {filler}."
    boiler = f"This package contains the debugging symbols of {filler}."
    docs = [{"_id": "a", "title": "Shock waves", "text": body},
            {"_id": "b", "title": "One sentence only", "text": f"Only claim about {filler}."},
            {"_id": "c", "title": "p1", "text": f"{boiler} {boiler} {boiler}"},        # boilerplate only: no query
            {"_id": "d", "title": "p2", "text": f"{boiler} {boiler} {boiler}"}]
    (src / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    info = write_pseudo_dataset(src, tmp_path / "out", "sentence")
    assert info == {"source": "src", "kind": "sentence", "documents": 4, "queries": 1, "seed": 13}
    corpus = {d.doc_id: d for d in iter_corpus(tmp_path / "out")}
    query = load_queries(tmp_path / "out")["s-a"].text
    assert load_qrels(tmp_path / "out", "train") == {"s-a": {"a": 1}}
    assert query.split()[1] == "claim" and query not in corpus["a"].text          # moved out, not copied
    assert corpus["a"].title == "Shock waves" and corpus["a"].text.count("claim about") == 2
    assert corpus["b"].text == docs[1]["text"]                                     # untouched without a query
    with pytest.raises(ValueError, match="unknown pseudo-query kind"):
        write_pseudo_dataset(src, tmp_path / "x", "ngram")


def test_repeat_train_copies_train_queries_only():
    from training.cross_encoder.data.bundle import repeat_train

    b = tiny_bundle()
    r = repeat_train(b, 3)
    n_train, n_dev = len(b.role("train")), len(b.role("dev"))
    assert len(r.role("train")) == 3 * n_train and len(r.role("dev")) == n_dev
    with pytest.raises(ValueError):
        repeat_train(b, 0)


def test_zscore_hybrid_matches_the_serving_fusion():
    from pipeline.core.score_fusion import linear_fusion
    from training.cross_encoder.data.bundle import zscore_hybrid

    q = tiny_bundle().queries[0]
    ours = dict(zscore_hybrid(q, depth=100))
    served = linear_fusion([q.bm25, q.dense], [0.6, 0.4], "zscore")
    assert ours.keys() == served.keys() and all(abs(ours[d] - served[d]) < 1e-12 for d in ours)


def test_distill_loss_is_zero_when_the_student_copies_the_teacher():
    torch = pytest.importorskip("torch")
    from training.cross_encoder.data.groups import Candidate, Group
    from training.cross_encoder.trainer import distill_loss

    g = Group("q", Candidate("a", 1, 1.0), (Candidate("b", 2, 0.5), Candidate("c", None, 0.0)))
    teacher = {"q": ({"a": 2.0, "b": 1.0}, -1.0)}                                    # c missing: the floor
    same = distill_loss(torch.tensor([[2.0, 1.0, -1.0]]), [g], teacher, 1.0)
    other = distill_loss(torch.tensor([[-1.0, 1.0, 2.0]]), [g], teacher, 1.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6) and other.item() > 0.5


def test_teacher_training_runs_and_dumps_scores(tiny_base, tmp_path):  # noqa: F811 - the fixture
    from training.__main__ import main
    from training.cross_encoder.data.mining import write_json

    b = tiny_bundle()
    rows = [{"qid": q.qid, "text": q.text, "role": q.role, "qrels": q.qrels, "bm25": q.bm25, "dense": q.dense}
            for q in b.queries]
    (tmp_path / "b").mkdir()
    write_json(tmp_path / "b" / "train.json.gz", {"meta": b.meta, "docs": b.docs, "queries": rows})
    write_json(tmp_path / "b" / "eval-test.json.gz", {"meta": b.meta, "docs": b.docs,
                                                     "queries": [{**r, "role": "test"} for r in rows]})
    code = main(["cross-encoder", "train", "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "m"),
                 "--base-model", str(tiny_base), "--variants", "listwise+curriculum+dense-negs+teacher",
                 "--negatives", "3", "--rank-to", "11", "--epochs", "1", "--groups-per-batch", "2", "--max-length", "64",
                 "--device", "cpu", "--repeat", "2", "--dump-scores", str(tmp_path / "scores")])
    assert code == 0
    report = json.loads((tmp_path / "m" / "training_report.json").read_text())
    assert report["chosen"]["config"]["teacher"] == "hybrid"
    dumped = json.loads((tmp_path / "scores" / "listwise+curriculum+dense-negs+teacher--test.json").read_text())
    assert set(dumped["stages"]) == {"bm25", "hybrid", "zhybrid"}
    qid, rows = next(iter(dumped["stages"]["bm25"].items()))
    assert len(rows[0]) == 3 and qid in dumped["qrels"]
    assert (tmp_path / "scores" / "listwise+curriculum+dense-negs+teacher--dev.json").is_file()
    assert main(["cross-encoder", "train", "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "m2"),
                 "--repeat", "1", "2"]) == 2                                          # one count per bundle


def test_sentences_of_an_all_lowercase_text_split_at_every_full_stop():
    from training.cross_encoder.data.pseudo_queries import split_sentences

    assert split_sentences("experiments on wings . the flow separates early . a model is proposed .") == [
        "experiments on wings .", "the flow separates early .", "a model is proposed ."]
    # with capitals present, a full stop before a lower-case word does not end a sentence (e.g. "approx. two")
    assert split_sentences("It took approx. two days. Then it ended.") == ["It took approx. two days.", "Then it ended."]
