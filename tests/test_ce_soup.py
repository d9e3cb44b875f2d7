"""Weight averaging of rerankers (model soups / WiSE-FT, issue 19): the mean is exact, bad inputs are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.test_training_cross_encoder import tiny_base  # noqa: F401 - fixture reused


def _folder(base, tmp_path, name, seed):
    from pipeline.scorers.cross_encoder_folder import write_module
    from training.cross_encoder.model import new_model

    module, tokenizer = new_model(base, seed=seed)
    return write_module(module, tokenizer, tmp_path / name, dtype="float32")


def test_normalized_weights_scale_and_refuse_bad_lists():
    from training.cross_encoder.soup import normalized_weights

    assert normalized_weights(2, None) == [0.5, 0.5]
    assert normalized_weights(2, [1, 3]) == [0.25, 0.75]
    for count, weights, match in [(1, None, "at least two"), (2, [1], "1 weights for 2"), (2, [1, -1], ">= 0"),
                                  (2, [0, 0], "not all 0")]:
        with pytest.raises(ValueError, match=match):
            normalized_weights(count, weights)


def test_soup_is_the_weighted_mean_of_every_tensor_and_scores(tiny_base, tmp_path):  # noqa: F811 - fixture
    import torch

    from pipeline.scorers.cross_encoder_folder import read_module
    from training.cross_encoder.soup import make_soup

    a, b = _folder(tiny_base, tmp_path, "a", 1), _folder(tiny_base, tmp_path, "b", 2)
    report = make_soup([a, b], [1, 3], tmp_path / "soup")
    assert [x["weight"] for x in report["soup"]] == [0.25, 0.75]
    assert json.loads((tmp_path / "soup" / "soup.json").read_text()) == report
    (ma, _), (mb, _), (ms, tok) = read_module(a), read_module(b), read_module(tmp_path / "soup")
    sa, sb = ma.state_dict(), mb.state_dict()
    for name, value in ms.state_dict().items():
        if torch.is_floating_point(value):
            assert torch.allclose(value, 0.25 * sa[name] + 0.75 * sb[name], atol=1e-6), name
    assert not torch.allclose(ms.head.weight, ma.head.weight)  # the head is averaged too, not copied
    enc = tok(["what is a kettle"], ["limescale in a kettle"], return_tensors="pt")
    with torch.no_grad():
        score = ms(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"])
    assert torch.isfinite(score).all()


def test_soup_refuses_models_of_other_shapes(tiny_base, tmp_path):  # noqa: F811 - fixture
    import transformers

    from training.cross_encoder.soup import make_soup

    a = _folder(tiny_base, tmp_path, "a", 1)
    wide = tmp_path / "wide-base"
    cfg = transformers.BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(cfg).save_pretrained(str(wide))
    transformers.AutoTokenizer.from_pretrained(str(tiny_base)).save_pretrained(str(wide))
    b = _folder(wide, tmp_path, "b", 2)
    with pytest.raises(ValueError, match="shape"):
        make_soup([a, b], None, tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_cli_soup_reports_a_missing_model_as_a_clear_error(tiny_base, tmp_path):  # noqa: F811 - fixture
    a = _folder(tiny_base, tmp_path, "a", 1)
    proc = subprocess.run([sys.executable, "-m", "training", "cross-encoder", "soup", "--models", str(a),
                           str(tmp_path / "nope"), "--out", str(tmp_path / "soup")], capture_output=True, text=True)
    assert proc.returncode == 2 and "not a cross-encoder folder" in proc.stderr
