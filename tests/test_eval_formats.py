"""MS MARCO / TREC formats: qrels, topics, tsv collections, run files, conversion to BEIR."""

from __future__ import annotations

import json

import pytest

from eval.formats import (
    FormatError,
    convert_to_beir,
    iter_tsv_collection,
    load_judgements,
    read_qrels,
    read_topics,
    write_trec_qrels,
)
from eval.trec import read_run, write_run
from pipeline.core.errors import PipelineError
from pipeline.core.types import Hit
from pipeline.storage.collection import load_qrels, load_queries

TREC_TOPICS = """<top>
<num> Number: 301
<title> International Organized Crime
<desc> Description:
Identify organizations that participate in
international criminal activity.
<narr> Narrative:
A relevant document must name the organization.
</top>

<top>
<num> Number: 302 <title> Poliomyelitis and Post-Polio
<desc> Description: Is the disease on the rise?
</top>
"""


def test_trec_and_beir_qrels(tmp_path):
    trec = tmp_path / "qrels.txt"
    trec.write_text("301 0 FBIS3-1 1\n301 0 FBIS3-2 0\n302 Q0 LA-9 2\n")
    assert read_qrels(trec) == {"301": {"FBIS3-1": 1, "FBIS3-2": 0}, "302": {"LA-9": 2}}
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\r\n1\t31715818\t1\r\n")
    assert read_qrels(beir) == {"1": {"31715818": 1}}
    out = tmp_path / "again.txt"
    write_trec_qrels(read_qrels(trec), out)
    assert read_qrels(out) == read_qrels(trec)


@pytest.mark.parametrize("line", ["301 0 d1", "301 0 d1 high", "301 0 d1 1 extra"])
def test_bad_qrels_name_the_line(tmp_path, line):
    path = tmp_path / "q.txt"
    path.write_text(f"301 0 d0 1\n{line}\n")
    with pytest.raises(FormatError, match=r"q.txt:2"):
        read_qrels(path)


def test_trec_topics_fields(tmp_path):
    path = tmp_path / "topics.txt"
    path.write_text(TREC_TOPICS)
    assert read_topics(path) == {"301": "International Organized Crime", "302": "Poliomyelitis and Post-Polio"}
    desc = read_topics(path, field="desc")
    assert desc["301"] == "Identify organizations that participate in international criminal activity."
    assert desc["302"] == "Is the disease on the rise?"
    with pytest.raises(FormatError, match="no <num> or no <narr>"):
        read_topics(path, field="narr")  # topic 302 has no narrative


def test_msmarco_queries_tsv(tmp_path):
    path = tmp_path / "queries.dev.tsv"
    path.write_text("1048585\twhat is paula deen's brother\n2\tAndorra\n")
    assert read_topics(path) == {"1048585": "what is paula deen's brother", "2": "Andorra"}
    path.write_text("1\tx\n1\ty\n")
    with pytest.raises(FormatError, match="duplicate query id"):
        read_topics(path)


def test_tsv_collection_two_and_three_columns(tmp_path):
    path = tmp_path / "collection.tsv"
    path.write_text("0\tThe presence of communication.\n7\tTitle\tBody text\n")
    docs = list(iter_tsv_collection(path))
    assert [(d.doc_id, d.title, d.text) for d in docs] == [("0", "", "The presence of communication."), ("7", "Title", "Body text")]
    path.write_text("0\ta\n0\tb\n")
    with pytest.raises(FormatError, match="duplicate document id"):
        list(iter_tsv_collection(path))


def test_convert_to_beir_round_trip(tmp_path):
    (tmp_path / "c.tsv").write_text("d1\tglucose from sunlight\nd2\tlava and magma\n")
    (tmp_path / "q.tsv").write_text("q1\tplants glucose\nq2\tvolcano lava\nq3\tunjudged\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq2 0 d2 1\n")
    out = convert_to_beir(tmp_path / "c.tsv", tmp_path / "q.tsv", tmp_path / "qrels.txt", tmp_path / "beir", split="dev")
    assert load_qrels(out, "dev") == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    assert set(load_queries(out)) == {"q1", "q2", "q3"}
    assert json.loads((out / "corpus.jsonl").read_text().splitlines()[1]) == {"_id": "d2", "title": "", "text": "lava and magma"}
    with pytest.raises(FormatError, match="exists"):
        convert_to_beir(tmp_path / "c.tsv", tmp_path / "q.tsv", tmp_path / "qrels.txt", out)


def test_convert_refuses_judged_queries_without_topics_and_leaves_nothing(tmp_path):
    (tmp_path / "c.tsv").write_text("d1\tx\n")
    (tmp_path / "q.tsv").write_text("q1\tx\n")
    (tmp_path / "qrels.txt").write_text("q9 0 d1 1\n")
    with pytest.raises(FormatError, match="not in"):
        convert_to_beir(tmp_path / "c.tsv", tmp_path / "q.tsv", tmp_path / "qrels.txt", tmp_path / "beir")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n")
    (tmp_path / "c.tsv").write_text("d1\tx\nbroken line without tab\n")
    with pytest.raises(FormatError, match="c.tsv:2"):
        convert_to_beir(tmp_path / "c.tsv", tmp_path / "q.tsv", tmp_path / "qrels.txt", tmp_path / "beir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tsv", "q.tsv", "qrels.txt"]  # no partial folder


def test_load_judgements_from_folder_or_file(tiny_dataset, tmp_path):
    qrels, topics = load_judgements(tiny_dataset, "test")
    assert qrels["q3"] == {"d6": 2} and topics["q5"].startswith("unjudged")
    write_trec_qrels(qrels, tmp_path / "q.txt")
    assert load_judgements(tmp_path / "q.txt") == (qrels, None)


@pytest.mark.parametrize("content, message", [
    ("q1 Q0 d1 1 2.0\n", "6 columns"),
    ("q1 Q0 d1 1 high run\n", "not a finite number"),
    ("q1 Q0 d1 1 nan run\n", "not a finite number"),
    ("q1 Q0 d1 1 2.0 run\nq1 Q0 d1 2 1.0 run\n", "appears twice"),
])
def test_bad_run_files_are_typed_errors(tmp_path, content, message):
    path = tmp_path / "r.trec"
    path.write_text(content)
    with pytest.raises(FormatError, match=message) as info:
        read_run(path)
    assert isinstance(info.value, PipelineError) and isinstance(info.value, ValueError)


def test_run_sorted_by_score_and_tag_checked(tmp_path):
    path = tmp_path / "r.trec"
    path.write_text("q1 Q0 a 2 1.0 t\nq1 Q0 b 1 3.0 t\n")
    assert [h.doc_id for h in read_run(path)["q1"]] == ["b", "a"]
    with pytest.raises(ValueError, match="tag"):
        write_run({"q1": [Hit("q1", "a", 1.0)]}, tmp_path / "x.trec", tag="two words")
    with pytest.raises(FormatError, match="no such run file"):
        read_run(tmp_path / "missing.trec")
