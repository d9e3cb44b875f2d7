"""A lean inference forward pass for BERT-style cross-encoders (no host syncs, fused QKV).

``transformers``' ``BertModel`` checks on every call whether the attention mask is all ones
(``mask.all()``), a host sync: on a GPU the launching thread then waits for the previous batch
before it can queue the next, so any pause of that thread (the GIL held by the tokenizer thread)
idles the GPU. :class:`FastBertScorer` runs the same computation from the same parameters with
the query/key/value projections fused into one matrix product and a boolean key mask handed to
``scaled_dot_product_attention`` as is, so a batch is queued without waiting for anything.

Same scores as the ``transformers`` module (tested to 1e-5 in fp32); used by
:class:`pipeline.scorers.cross_encoder.CrossEncoderScorer` for inference only (training keeps
the ``transformers`` module). Example::

    fast = fast_bert_scorer(encoder, head)       # encoder: a transformers BertModel, head: nn.Linear
    logits = fast(input_ids, token_type_ids, attention_mask)
"""

from __future__ import annotations

import functools
from typing import Any

SUPPORTED = {"bert"}


def supports(config: Any) -> bool:
    """Whether :func:`fast_bert_scorer` reproduces this encoder exactly (absolute positions, erf GELU)."""
    return (getattr(config, "model_type", None) in SUPPORTED
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and getattr(config, "hidden_act", None) == "gelu")


@functools.cache
def _classes():
    import torch
    import torch.nn.functional as F

    class FusedLayer(torch.nn.Module):
        """One encoder layer: fused QKV projection, attention, output projection, FFN, post-LayerNorms."""

        def __init__(self, layer, heads: int):
            super().__init__()
            att = layer.attention
            q, k, v = att.self.query, att.self.key, att.self.value
            self.qkv = torch.nn.Linear(q.in_features, 3 * q.out_features)
            with torch.no_grad():
                self.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
                self.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
            self.out, self.ln1 = att.output.dense, att.output.LayerNorm
            self.ffn_in, self.ffn_out, self.ln2 = layer.intermediate.dense, layer.output.dense, layer.output.LayerNorm
            self.heads = heads

        def forward(self, x, key_mask):
            b, t, h = x.shape
            qkv = self.qkv(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=key_mask)
            x = self.ln1(x + self.out(att.transpose(1, 2).reshape(b, t, h)))
            return self.ln2(x + self.ffn_out(F.gelu(self.ffn_in(x))))

    class FastBertScorer(torch.nn.Module):
        """Embeddings, fused layers, masked mean pooling, linear head: one logit per pair."""

        def __init__(self, encoder, head):
            super().__init__()
            emb = encoder.embeddings
            self.word, self.position, self.token_type = emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings
            self.emb_ln = emb.LayerNorm
            heads = encoder.config.num_attention_heads
            self.layers = torch.nn.ModuleList(FusedLayer(layer, heads) for layer in encoder.encoder.layer)
            self.head = head
            # token pruning (off by default; see prune_tokens and set_pruning): from layer prune_layer on, only the
            # query segment and the prune_keep share (at least prune_min) of the passage go on and are pooled
            self.prune_layer: int | None = None
            self.prune_keep = 1.0
            self.prune_min = 0

        def forward(self, input_ids, token_type_ids, attention_mask):
            t = input_ids.shape[1]
            positions = torch.arange(t, device=input_ids.device)
            x = self.word(input_ids) + self.token_type(token_type_ids) + self.position(positions)[None]
            x = self.emb_ln(x)
            key_mask = attention_mask.bool()[:, None, None, :]  # (batch, 1, 1, keys): padding never attended
            for i, layer in enumerate(self.layers):
                if i == self.prune_layer and self.prune_keep < 1.0:
                    x, attention_mask = prune_tokens(layer, x, token_type_ids, attention_mask, self.prune_keep,
                                                     self.prune_min)
                    key_mask = attention_mask.bool()[:, None, None, :]
                x = layer(x, key_mask)
            return head_fp32(self.head, masked_mean(x.float(), attention_mask)).squeeze(-1)

    return FastBertScorer


def set_pruning(module, layer: int | None, keep: float, minimum: int = 0) -> dict | None:
    """Switch token pruning of a fast module on (``layer`` set and ``keep`` < 1; returns what is on) or off (None).

    Raises ``ValueError`` when pruning is asked of a module that cannot prune (``module`` None: not the fast
    BERT path, e.g. int8) or of a layer the encoder does not have."""
    if layer is None or keep >= 1.0:
        if module is not None:
            module.prune_layer, module.prune_keep = None, 1.0
        return None
    if module is None:
        raise ValueError("token pruning (prune_layer) needs the fast BERT path: a BERT cross-encoder, precision not int8")
    if not 0 <= layer < len(module.layers):
        raise ValueError(f"prune_layer {layer}: the encoder has layers 0..{len(module.layers) - 1}")
    module.prune_layer, module.prune_keep, module.prune_min = layer, keep, minimum
    return {"layer": layer, "keep": keep, "min_tokens": minimum}


def prune_tokens(layer, x, token_type_ids, attention_mask, keep: float, minimum: int = 0):
    """Keep the query segment and the ``keep`` fraction (at least ``minimum``) of passage tokens the query's tokens attend to most
    (this layer's attention, averaged over heads and query tokens); the others leave the encoder here and the
    mean pooling. Returns the kept vectors (in their order) and their mask."""
    import torch
    import torch.nn.functional as F

    b, t, h = x.shape
    heads = layer.heads
    d = h // heads
    w, bias = layer.qkv.weight, layer.qkv.bias
    k = F.linear(x, w[h : 2 * h], bias[h : 2 * h]).view(b, t, heads, d).transpose(1, 2)
    valid = attention_mask.bool()
    query_seg = (token_type_ids == 0) & valid
    lead = int(query_seg.sum(1).max())  # the query segment ([CLS] query [SEP]) is a prefix of every row
    q = F.linear(x[:, :lead], w[:h], bias[:h]).view(b, lead, heads, d).transpose(1, 2)
    logits = (q @ k.transpose(-1, -2)).float() / d**0.5  # (b, heads, lead, t)
    logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = logits.softmax(-1) * query_seg[:, None, :lead, None]
    importance = probs.sum((1, 2))  # (b, t) attention received from the query segment
    passage = (token_type_ids == 1) & valid
    n_passage = passage.sum(1)
    n_keep = torch.maximum((n_passage.float() * keep).ceil().long(), n_passage.clamp(max=minimum))
    importance = importance.masked_fill(~passage, float("-inf"))
    order = importance.argsort(1, descending=True)
    rank = order.argsort(1)
    kept = query_seg | (passage & (rank < n_keep[:, None]))
    width = int(kept.sum(1).max())
    index = (kept.long() * (t - torch.arange(t, device=x.device))).argsort(1, descending=True)[:, :width]
    index = index.sort(1).values
    x_kept = x.gather(1, index[..., None].expand(b, width, h))
    return x_kept, kept.gather(1, index).to(attention_mask.dtype)


def head_fp32(head, pooled):
    """The linear head applied in fp32 whatever the encoder's precision: the logits are not rounded to bf16
    (steps of 1/32 near 4-8, i.e. ties and flips between two runs of the same model; results/2026-12-04-ce-packed)."""
    import torch.nn.functional as F

    bias = head.bias.float() if head.bias is not None else None
    return F.linear(pooled.float(), head.weight.float(), bias)


def masked_mean(hidden, attention_mask):
    """Mean of the token vectors that ``attention_mask`` keeps (the pooling of every cross-encoder here);
    the fast modules hand it fp32 vectors, so the sum over a passage is not rounded to bf16."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def fast_bert_scorer(encoder, head):
    """The inference module (a ``torch.nn.Module``) for a ``transformers`` BERT encoder and a linear head;
    shares the encoder's parameters except the fused QKV matrices (copies)."""
    if not supports(encoder.config):
        raise ValueError(f"fast_bert_scorer supports BERT with absolute positions and GELU, not {encoder.config.model_type}")
    return _classes()(encoder, head)
