"""W8A8 per-token linear layers (pipeline/scorers/int8_linear.py) against fp32 nn.Linear."""

import pytest
import torch

from pipeline.scorers.int8_linear import QMAX, Int8Linear, quantize_linears


def _relative_error(got, want):
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("rows", [1, 7, 17, 300])
def test_close_to_fp32_for_any_number_of_rows(rows):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    x = torch.randn(rows, 64)
    assert _relative_error(Int8Linear.from_linear(lin)(x), lin(x)) < 0.02


def test_one_outlier_token_does_not_cost_the_others_their_precision():
    """Per-token scales: a token 1000x larger leaves the other rows as exact as without it
    (a per-tensor scale, as in torch's dynamic quantization, would flatten them to zero)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    q = Int8Linear.from_linear(lin)
    x = torch.randn(16, 64)
    spiked = x.clone()
    spiked[0] *= 1000
    torch.testing.assert_close(q(spiked)[1:], q(x)[1:])
    assert _relative_error(q(spiked)[1:], lin(x)[1:]) < 0.02


def test_keeps_leading_dimensions_and_handles_zero_rows_and_no_bias():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 24, bias=False)
    x = torch.randn(2, 5, 32)
    x[0, 0] = 0  # an all-zero token must not divide by zero
    y = Int8Linear.from_linear(lin)(x)
    assert y.shape == (2, 5, 24) and torch.isfinite(y).all() and y[0, 0].abs().max() == 0
    assert _relative_error(y, lin(x)) < 0.02


def test_weights_are_int8_within_range_per_output_channel():
    lin = torch.nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight[3] *= 100  # one large row keeps its own scale
    q = Int8Linear.from_linear(lin)
    assert q.weight_t.dtype == torch.int8 and q.weight_t.shape == (16, 8)
    assert int(q.weight_t.abs().max()) <= QMAX and (q.weight_t.abs().amax(dim=0) == QMAX).all()


def test_quantize_linears_swaps_all_but_the_kept_ones():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    names = quantize_linears(model, keep=lambda name: name == "2")
    assert names == ["0"] and isinstance(model[0], Int8Linear) and isinstance(model[2], torch.nn.Linear)
