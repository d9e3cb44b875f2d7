"""The cross-encoder scorer's padding-free path: when it runs, and how a call's pairs are launched packed.

``packing`` (an option of :class:`~pipeline.scorers.cross_encoder_options.CrossEncoderOptions`):

* ``auto`` (default): packed on a CUDA device when the fast BERT module runs and this torch has a
  variable-length attention (:func:`pipeline.scorers.packed_bert.attention_kind`) that passes a self-check at
  load (two pairs scored packed and padded must agree; flash varlen first, then nested tensors); padded
  otherwise, so the CPU path is unchanged. On a GPU the FFN's bias and GELU run in the first product's
  epilogue (``packed_gelu_epilogue``, tanh GELU). Measured on an H200 against an fp32 reference
  (results/2026-12-04-ce-packed): the fp32 top-10 set kept on 285 of 300 SciFact queries by padded bf16, 285 by
  packed, 293 by packed with the epilogue (+14% forward);
* ``on``: packed wherever the fast module runs (on a CPU with the per-pair reference attention: for tests);
  raises if no attention passes the self-check;
* ``off``: padded batches, as before.

Batches are consecutive pairs up to ``packed_tokens`` real tokens each (no length sort: nothing is padded).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from pipeline.core.errors import RerankTimeoutError
from pipeline.scorers.packed_bert import (
    attention_kind,
    packed_arrays,
    packed_bert_scorer,
    round_seqlen,
    to_device,
    token_batches,
)

logger = logging.getLogger(__name__)

SELF_CHECK_TOLERANCE = 0.1  # logits; bf16 noise on these two pairs is ~0.01, a broken kernel is far off


class PackedPath:
    """The packed module of a scorer, with what ``GET /pipelines`` reports about it (:meth:`describe`)."""

    def __init__(self, module, kind: str, batch_tokens: int, batch_size: int):
        self.module, self.kind, self.batch_tokens, self.batch_size = module, kind, batch_tokens, batch_size

    def launch(self, scorer, encoded, deadline: float | None) -> list:
        """Queue the forward passes of ``encoded`` pairs; ``[(pair indices, logits on the device)]``."""
        torch = scorer.torch
        lengths = [len(q) + len(p) + 3 for q, p in encoded]
        batches = token_batches(lengths, self.batch_tokens, self.batch_size)
        tok = scorer.tokenizer
        outputs = []
        with torch.inference_mode():
            for batch in batches:
                if deadline is not None and time.monotonic() > deadline:
                    raise RerankTimeoutError(f"reranking ran past its time budget after {len(outputs)}/{len(batches)} batches")
                tokens, cu, longest = to_device(packed_arrays([encoded[i] for i in batch], tok.cls_token_id, tok.sep_token_id),
                                                scorer.device)
                out = self.module(tokens, cu, round_seqlen(longest))
                outputs.append((batch, out.float().tolist() if scorer.device == "cpu" else out))
        return outputs


def setup_packing(scorer, fast_module) -> tuple[PackedPath | None, str]:
    """``(the packed path or None, why not)`` for ``scorer`` (its device, precision and tokenizer set).
    ``fast_module``: the eager FastBertScorer, or None where the transformers module runs."""
    options = scorer.options  # packing, compile, compile_mode, packed_tokens, packed_attention, packed_gelu_epilogue
    mode = options.packing
    torch = scorer.torch
    if mode == "off":
        return None, "packing: off"
    if mode == "auto" and not scorer.device.startswith("cuda"):
        return None, "packing: auto is off on a CPU"
    if fast_module is None:
        if mode == "on":
            raise ValueError("packing: on needs the fast BERT module (fast: true, a BERT encoder, attn_implementation sdpa)")
        return None, "packing: needs the fast BERT module"
    dtype = next(fast_module.parameters()).dtype
    first = attention_kind(scorer.device, dtype)
    kinds = [first, *(["nested"] if first == "varlen" else [])]  # varlen failing its self-check: try nested
    if options.packed_attention:
        if options.packed_attention not in ("varlen", "nested", "reference"):
            raise ValueError(f"packed_attention must be varlen, nested or reference, not {options.packed_attention!r}")
        kinds = [options.packed_attention]
    gelu_epilogue = options.packed_gelu_epilogue
    if gelu_epilogue is None:  # on a GPU: +14% forward, rankings as close to fp32 as the padded path's (ce-packed results)
        gelu_epilogue = scorer.device.startswith("cuda")
    problems = []
    for kind in kinds:
        module = packed_bert_scorer(fast_module, kind, gelu_epilogue).eval()
        path = PackedPath(module, kind, options.packed_tokens, max(scorer.batch_size, 4096))
        problem = self_check(scorer, path, fast_module)
        if not problem:
            if options.compile:
                path.module = torch.compile(path.module, dynamic=True, mode=options.compile_mode)
            return path, ""
        problems.append(f"{kind}: {problem}")
        logger.warning("cross-encoder %s: packed attention %s failed its self-check: %s", scorer.folder, kind, problem)
    if mode == "on":
        raise ValueError(f"packing: on, but the packed path failed its self-check ({'; '.join(problems)})")
    return None, f"packing: self-check failed ({'; '.join(problems)})"


def self_check(scorer, path: PackedPath, fast_module) -> str:
    """Score two pairs of different lengths packed and padded with the eager modules; '' if they agree."""
    torch = scorer.torch
    pairs = [("packing self check", "a short passage"), ("a longer query to check", "a passage of a few more words " * 9)]
    try:
        encoded = scorer._pairs_from(pairs, scorer._tokenize(list(dict.fromkeys(t for pair in pairs for t in pair))))
        packed = scorer._collect(len(encoded), path.launch(scorer, encoded, None))
        with torch.inference_mode():
            tensors = [torch.from_numpy(a).to(scorer.device) for a in scorer._batch_arrays(encoded)]
            padded = fast_module(*tensors).float().tolist()
    except Exception as exc:  # noqa: BLE001 - any kernel or API problem: the padded path serves
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    diff = float(np.max(np.abs(np.subtract(packed, padded))))
    return "" if diff <= SELF_CHECK_TOLERANCE else f"packed and padded logits differ by {diff:.3f}"
