"""Variable-length attention kernels for the packed cross-encoder path (issue 23), timed side by side.

The profile of the packed forward pass (results/2026-12-04-ce-packed, second run) puts flash varlen attention
(head dim 32) at a third of the GPU time. This times the candidates on one packed batch of the real pair lengths
(SciFact BM25 top-100, cut as the scorer cuts them), 12 heads of 32, and checks each against an fp32 reference:

* ``varlen``: ``torch.nn.attention.varlen.varlen_attn`` (flash, what the scorer runs today);
* ``nested-<backend>``: SDPA over jagged nested tensors with one backend forced (flash, efficient, cudnn);
* ``flex``: ``flex_attention`` (compiled) with a document mask over the stream;
* ``bucketed-<backend>``: pairs sorted by length, padded per bucket of similar lengths, dense SDPA with a key mask.

Per-batch preparation (the bucket indices, the block mask) is made on the first call and not timed: a scorer makes
it once per batch for all six layers. Ratios are against ``varlen`` measured in the same run. One JSON object at
the end.

    python -m benchmarks.attention_kernels --device cuda          # in gpu/jobs/ce_packed.sh (ATTENTION=1)
    python -m benchmarks.attention_kernels --device cpu --tokens 4096 --kinds nested-math bucketed-math   # a check
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

HEADS, DIM = 12, 32


def pair_lengths(bundle: Path, model: Path, tokens: int, max_length: int) -> list[int]:
    """Lengths (``[CLS] q [SEP] p [SEP]``, cut as the scorer cuts) of the bundle's first pairs, ``tokens`` in all."""
    from benchmarks.ce_throughput import load_pairs
    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    pairs, _, _ = load_pairs(bundle, None, depth=100)
    scorer = CrossEncoderScorer(model, device="cpu", precision="fp32", max_length=max_length)
    lengths, total = [], 0
    for q, p in scorer.encode(pairs[: 2 * tokens // 200]):
        n = len(q) + len(p) + 3
        if total + n > tokens:
            break
        lengths.append(n)
        total += n
    return lengths


def kernels(kinds: list[str]):
    """name -> function(q, k, v, cu, max_seqlen, lengths) over ``(T, heads, dim)`` packed tensors."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    out = {}

    def varlen(q, k, v, cu, max_seqlen, lengths):
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(q, k, v, cu, cu, max_seqlen, max_seqlen)

    def nested(backend):
        def run(q, k, v, cu, max_seqlen, lengths):
            offsets = cu.long()
            nts = [torch.nested.nested_tensor_from_jagged(x, offsets, min_seqlen=1, max_seqlen=max_seqlen).transpose(1, 2)
                   for x in (q, k, v)]
            with sdpa_kernel([backends[backend]]):
                return F.scaled_dot_product_attention(*nts).transpose(1, 2).values()
        return run

    def bucketed(backend, bucket: int = 64):
        """Sort by length, pad each group of ``bucket`` pairs to its longest, dense SDPA with a key mask, unpad."""
        plan = {}

        def prepare(cu, lengths):  # once per batch in a scorer (shared by the six layers): not timed below
            order = sorted(range(len(lengths)), key=lengths.__getitem__)
            starts = cu.tolist()
            groups = []
            for b in range(0, len(order), bucket):
                group = order[b : b + bucket]
                width = max(lengths[i] for i in group)
                idx = torch.full((len(group), width), -1, dtype=torch.long)
                for row, i in enumerate(group):
                    idx[row, : lengths[i]] = torch.arange(starts[i], starts[i] + lengths[i])
                idx = idx.to(cu.device)
                keep = idx >= 0
                groups.append((idx.clamp(min=0), keep, idx[keep]))
            return groups

        def run(q, k, v, cu, max_seqlen, lengths):
            if id(lengths) not in plan:
                plan[id(lengths)] = prepare(cu, lengths)
            result = torch.empty_like(q)
            for gather, keep, scatter in plan[id(lengths)]:
                dense = [x[gather].transpose(1, 2) for x in (q, k, v)]  # (group, heads, width, dim)
                with sdpa_kernel([backends[backend]]):
                    att = F.scaled_dot_product_attention(*dense, attn_mask=keep[:, None, None, :])
                result[scatter] = att.transpose(1, 2)[keep]
            return result
        return run

    def flex():
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        compiled = torch.compile(flex_attention, dynamic=False)
        masks = {}

        def run(q, k, v, cu, max_seqlen, lengths):
            t = q.shape[0]
            if id(lengths) not in masks:  # once per batch in a scorer: not timed below
                doc = torch.repeat_interleave(torch.arange(len(lengths), device=q.device),
                                              torch.tensor(lengths, device=q.device), output_size=t)

                def same_doc(b, h, qi, ki):
                    return doc[qi] == doc[ki]
                masks[id(lengths)] = create_block_mask(same_doc, None, None, t, t, device=q.device)
            x = [y.transpose(0, 1)[None] for y in (q, k, v)]  # (1, heads, T, dim)
            return compiled(*x, block_mask=masks[id(lengths)])[0].transpose(0, 1)
        return run

    for kind in kinds:
        if kind == "varlen":
            out[kind] = varlen
        elif kind.startswith("nested-"):
            out[kind] = nested(kind.split("-", 1)[1])
        elif kind.startswith("bucketed-"):
            out[kind] = bucketed(kind.split("-", 1)[1])
        elif kind == "flex":
            out[kind] = flex()
        else:
            raise SystemExit(f"unknown kind {kind}")
    return out


def reference(q, k, v, lengths, cu):
    """fp32 attention per pair (the math every kernel approximates)."""
    import torch
    import torch.nn.functional as F

    out = torch.empty_like(q, dtype=torch.float32)
    starts = cu.tolist()
    for i, n in enumerate(lengths):
        s = starts[i]
        seg = [x[s : s + n].float().transpose(0, 1)[None] for x in (q, k, v)]
        out[s : s + n] = F.scaled_dot_product_attention(*seg)[0].transpose(0, 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/ce-minilm"))
    p.add_argument("--bundle", type=Path, default=Path(".cache/ce/scifact/eval-test.json.gz"))
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--tokens", type=int, default=131072, help="tokens in the packed batch (the scorer's packed_tokens)")
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--kinds", nargs="*", default=["varlen", "nested-flash", "nested-efficient", "nested-cudnn", "flex",
                                                  "bucketed-cudnn", "bucketed-efficient"])
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)

    import torch

    lengths = pair_lengths(args.bundle, args.model, args.tokens, args.max_length)
    t = sum(lengths)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(t, HEADS, DIM, generator=gen).to(args.device, dtype) for _ in range(3))
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=args.device)
    max_seqlen = -(-max(lengths) // 64) * 64
    want = reference(q, k, v, lengths, cu)
    result = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "torch": torch.__version__,
              "pairs": len(lengths), "tokens": t, "mean_length": round(t / len(lengths), 1), "rows": []}
    print(json.dumps({k_: v_ for k_, v_ in result.items() if k_ != "rows"}), flush=True)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for name, fn in kernels(args.kinds).items():
        try:
            got = fn(q, k, v, cu, max_seqlen, lengths)  # warm (compiles flex)
            sync()
            err = float((got.float() - want).abs().max())
            spent = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn(q, k, v, cu, max_seqlen, lengths)
                sync()
                spent.append(time.perf_counter() - start)
            row = {"kind": name, "ms_median": round(1000 * statistics.median(spent), 3),
                   "ms_best": round(1000 * min(spent), 3), "max_abs_err_vs_fp32": round(err, 5)}
        except Exception as exc:  # noqa: BLE001 - a kernel this torch or GPU lacks: report it, go on
            row = {"kind": name, "failed": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
        print(json.dumps(row), flush=True)
        result["rows"].append(row)
    base = next((r for r in result["rows"] if r["kind"] == "varlen" and "ms_median" in r), None)
    print(f"\n{len(lengths)} pairs, {t} tokens, {HEADS} heads of {DIM}, {result['device']}, torch {result['torch']}")
    for row in result["rows"]:
        if "failed" in row:
            print(f"{row['kind']:<20} failed: {row['failed'][:120]}")
            continue
        ratio = base["ms_median"] / row["ms_median"] if base else float("nan")
        row["speed_vs_varlen"] = round(ratio, 3)
        print(f"{row['kind']:<20} {row['ms_median']:>9.3f} ms (best {row['ms_best']:.3f})  {ratio:5.2f}x varlen  "
              f"max |err| vs fp32 {row['max_abs_err_vs_fp32']}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
