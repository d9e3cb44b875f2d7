"""Batch encoding with a training module (length-sorted batches, bf16 on CUDA, L2-normalised float32)."""

from __future__ import annotations

from typing import Any

import numpy as np

from training.dense.retrieval_eval import EncodeFn


def module_encoder(module: Any, device: str, max_length: int, batch_size: int = 256, domain: str | None = None,
                   bf16: bool = True) -> EncodeFn:
    """An ``encode(texts) -> (n, dim) float32`` function over ``module`` (see :mod:`training.dense.contrastive`)."""
    import torch

    def encode(texts: list[str]) -> np.ndarray:
        module.to(device).eval()
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: list[np.ndarray] = []
        use_bf16 = bf16 and str(device).startswith("cuda")
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            for i in range(0, len(texts), batch_size):
                chunk = [texts[j] for j in order[i : i + batch_size]]
                features = {k: v.to(device) for k, v in module.tokenize(chunk, max_length, domain).items()}
                emb = module(features)["sentence_embedding"].float()
                out.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        vecs = np.concatenate(out)
        result = np.empty_like(vecs)
        result[order] = vecs
        return result

    return encode


def query_and_document_encoders(module: Any, device: str, query_max_length: int, doc_max_length: int,
                                domain: str | None = None) -> tuple[EncodeFn, EncodeFn]:
    return (module_encoder(module, device, query_max_length, domain=domain),
            module_encoder(module, device, doc_max_length, domain=domain))
