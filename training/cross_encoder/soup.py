"""Weight averaging of cross-encoders fine-tuned from one starting point (model soups, WiSE-FT).

Rerankers continued from the same model stay in one basin of the loss, so a weighted mean of their
weights is itself a reranker; averaging models trained on different data (or the start and a
fine-tuned model, WiSE-FT) tends to keep what each learnt and to be more robust out of domain
(Wortsman et al. 2022), at no cost when serving::

    python -m training cross-encoder soup --models models/ce-minilm runs/ce-a runs/ce-b --out runs/ce-soup
    python -m training cross-encoder soup --models models/ce-minilm runs/ce-a --weights 0.3 0.7 --out runs/ce-wise

The tokenizers must be equal and every tensor must have the same name and shape in every model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence


def normalized_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    """``weights`` scaled to sum to 1 (default: uniform); refuses a wrong count, negatives or an all-zero list."""
    if count < 2:
        raise ValueError("a soup needs at least two models")
    if not weights:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} models")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 and not all 0, got {list(weights)}")
    total = float(sum(weights))
    return [w / total for w in weights]


def average_states(states: Sequence[dict], weights: Sequence[float]) -> dict:
    """The weighted mean of state dicts (fp32); every dict must hold the same names and shapes."""
    import torch

    names = list(states[0])
    for i, state in enumerate(states[1:], start=2):
        if set(state) != set(names):
            diff = sorted(set(state) ^ set(names))[:3]
            raise ValueError(f"model {i} has other tensors than model 1 (e.g. {diff}): not the same architecture")
        for name in names:
            if state[name].shape != states[0][name].shape:
                raise ValueError(f"model {i}: {name} has shape {tuple(state[name].shape)}, "
                                 f"model 1 {tuple(states[0][name].shape)}")
    out = {}
    for name in names:
        first = states[0][name]
        if not torch.is_floating_point(first):  # integer buffers (position ids): all equal, keep the first
            out[name] = first.clone()
            continue
        out[name] = sum(w * s[name].float() for w, s in zip(weights, states, strict=True))
    return out


def make_soup(folders: Sequence[Path], weights: Sequence[float] | None, out: Path) -> dict:
    """Average the cross-encoder folders into ``out`` (bf16 encoder, as trained models are stored); returns a report."""
    from pipeline.scorers.cross_encoder_folder import read_module, stored_dtype, write_module

    folders = [Path(f) for f in folders]
    w = normalized_weights(len(folders), weights)
    modules = [read_module(f) for f in folders]
    vocab = modules[0][1].get_vocab()
    for f, (_, tok) in zip(folders[1:], modules[1:], strict=True):
        if tok.get_vocab() != vocab:
            raise ValueError(f"{f} does not share the tokenizer of {folders[0]}")
    soup, tokenizer = modules[0]
    soup.load_state_dict(average_states([m.state_dict() for m, _ in modules], w))
    write_module(soup, tokenizer, out, dtype=stored_dtype(folders[0]))
    report = {"soup": [{"model": str(f), "weight": round(x, 6)} for f, x in zip(folders, w, strict=True)]}
    (Path(out) / "soup.json").write_text(json.dumps(report, indent=2))
    return report
