"""/rerank's additions with a real tokenizer: the cross-encoder's passage budget, cutting by tokens, calibration."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.core.types import Document
from service.rerank_api import DocumentTooLongError, calibrated, prepare_documents


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    from training.cross_encoder.model import packaged_minilm

    return transformers.AutoTokenizer.from_pretrained(str(packaged_minilm()))


def _stage(tokenizer, max_length=32, query_max_tokens=64):
    """What the cross-encoder stage exposes: ``stage.scorer.{tokenizer, max_length, query_max_tokens}``."""
    return SimpleNamespace(scorer=SimpleNamespace(tokenizer=tokenizer, max_length=max_length, query_max_tokens=query_max_tokens))


def test_model_limit_is_max_length_minus_query_and_specials(tokenizer):
    long_doc = Document("0", "Volcanoes", "lava " * 100)
    short = Document("1", "", "lava flows")
    prepared = prepare_documents(_stage(tokenizer), "what is lava", [long_doc, short])
    assert prepared.limit == 32 - 3 - 3  # [CLS] what is lava [SEP] passage [SEP]
    assert prepared.tokens == [101, 2] and prepared.truncated == [True, False]
    assert prepared.docs == [long_doc, short]  # the model cuts; nothing is rewritten
    assert "1 of 2 documents were truncated to their first 26 tokens" in prepared.warnings[0]
    assert "the model reads 26 passage tokens" in prepared.warnings[0]


def test_max_tokens_per_doc_cuts_at_a_token_boundary(tokenizer):
    doc = Document("0", "Volcanoes", "Lava is molten rock that erupts from a volcano.")
    prepared = prepare_documents(_stage(tokenizer, max_length=512), "lava", [doc], max_tokens_per_doc=4)
    assert prepared.docs[0].text == "Volcanoes Lava is molten" and prepared.truncated == [True]
    assert len(tokenizer(prepared.docs[0].text, add_special_tokens=False)["input_ids"]) == 4


def test_truncate_false_raises_a_typed_error(tokenizer):
    with pytest.raises(DocumentTooLongError, match=r"indices \[0\]\) have more than 26 tokens"):
        prepare_documents(_stage(tokenizer), "what is lava", [Document("0", "", "lava " * 100)], truncate=False)


def test_calibration_is_monotone_and_bounded():
    raws = [-1000.0, -3.84, 0.0, 2.71, 1000.0]
    values = [calibrated(r) for r in raws]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] == 1.0 and values[2] == 0.5
