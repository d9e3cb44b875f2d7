"""W8A8 linear layers for CPU inference: int8 weights per output channel, int8 activations per token.

``torch.ao``'s dynamic quantization (``quantize_dynamic``) gives one scale to a whole batch of
activations (and, on x86, only 7 bits of it): one token with a large activation anywhere in the
batch costs every other token its resolution. Measured on our SciFact cross-encoder that lost
0.11 nDCG@10. Here each token (row) gets its own scale, each weight row its own scale, and the
int8 x int8 product accumulates in int32 through ``torch._int_mm`` (oneDNN, VNNI where the CPU
has it); the result is rescaled by ``token scale x channel scale`` and the bias added in fp32.

    layer = Int8Linear.from_linear(torch.nn.Linear(384, 1536))
    y = layer(x)          # x: (..., 384) float32 -> (..., 1536) float32

:func:`quantize_linears` swaps the chosen ``nn.Linear`` modules of a model in place.
"""

from __future__ import annotations

from typing import Callable

import torch

QMAX = 127  # symmetric int8: -127..127 (no -128, so negation is exact)


class Int8Linear(torch.nn.Module):
    """``nn.Linear`` with int8 weights (per output channel) and per-token int8 activations."""

    def __init__(self, weight_t: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight_t.shape
        self.register_buffer("weight_t", weight_t)  # (in, out) int8, column-major: _int_mm's fast layout
        self.register_buffer("weight_scale", weight_scale)  # (out,) float32
        # y = acc * token_scale * weight_scale + bias = (acc * token_scale + bias / weight_scale) * weight_scale:
        # two passes over the output (addcmul, mul_) instead of four, so the bias is kept divided by the scale
        self.register_buffer("bias_over_scale", bias / weight_scale if bias is not None else None)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> "Int8Linear":
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / QMAX
        q = torch.round(w / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
        bias = linear.bias.detach().float() if linear.bias is not None else None
        return cls(q.t(), scale, bias)  # q.t(): a (in, out) view of the row-major (out, in) matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(QMAX)
        q = torch.mul(rows, scale.reciprocal()).round_().to(torch.int8)  # |q| <= 127 by construction
        acc = torch._int_mm(q, self.weight_t)
        if self.bias_over_scale is not None:
            y = torch.addcmul(self.bias_over_scale, acc, scale).mul_(self.weight_scale)
        else:
            y = torch.mul(acc, scale).mul_(self.weight_scale)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, w8a8 per-token"


def quantize_linears(model: torch.nn.Module, keep: Callable[[str], bool] = lambda name: False) -> list[str]:
    """Replace every ``nn.Linear`` of ``model`` whose qualified name ``keep`` rejects by an
    :class:`Int8Linear`, in place; returns the names replaced."""
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and not keep(name)]
    for name, module in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Int8Linear.from_linear(module))
    return [name for name, _ in targets]
