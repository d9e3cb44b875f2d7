"""Cross-encoder on ONNX Runtime (fp32 and dynamic int8) against plain fp32 ``CrossEncoder.predict``, on a CPU.

Exports the ``transformers`` module (``fast=False``: the legacy exporter's graph is the one ORT's BERT
optimizer fuses into Attention/EmbedLayerNormalization; the FastBertScorer export does not fuse and
ran at half the speed), checks ORT fp32 against torch (max abs diff), fuses, and quantizes with
``quantize_dynamic`` (weights QInt8): per channel / per tensor, ``reduce_range`` and one variant that
keeps the embeddings fp32. Files go to ``--onnx-dir`` (under the ignored .cache/).

Then, in one process: the same 100 candidates of SciFact test query 0, scored ``--repeats`` times by
each variant, interleaved (median after a warm-up; tokenization included; ORT inputs built by
``CrossEncoderScorer.encode``/``_batch_arrays`` in ``length_batches``); nDCG@10 over ``--ndcg-queries``
queries x 100 candidates and the score correlation, against ``predict`` fp32 (targets: >= 2.5x, loss <= 0.005).

    python -m benchmarks.ce_onnx_int8 --repeats 5 --ndcg-queries 20

Needs (not in pyproject; measured with) onnxruntime==1.32.0 onnx==1.23.2 (torch 2.13.0+cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.ce_throughput import baseline_model, load_pairs, ndcg

NAMES = ["input_ids", "token_type_ids", "attention_mask"]
INT8 = {"int8 pc": dict(per_channel=True), "int8 pt": dict(per_channel=False),
        "int8 pc rr": dict(per_channel=True, reduce_range=True),
        "int8 pt no-emb": dict(per_channel=False, op_types_to_quantize=["MatMul", "Attention"])}


def export(scorer, pairs, out: Path) -> dict:
    """``fp32`` (fused) and every ``INT8`` variant under ``out``; returns the file per variant and the fp32 check."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    out.mkdir(parents=True, exist_ok=True)
    files = {"fp32": out / "ce-fp32-opt.onnx", **{k: out / f"ce-{k.replace(' ', '-')}.onnx" for k in INT8}}
    raw = out / "ce-fp32.onnx"
    arrays = scorer._batch_arrays(scorer.encode(pairs[:16]))
    with torch.inference_mode():
        ref = scorer.model(*map(torch.from_numpy, arrays)).numpy()
    if not raw.exists():
        axes = {0: "batch", 1: "seq"}
        torch.onnx.export(scorer.model, tuple(map(torch.from_numpy, arrays)), str(raw), input_names=NAMES,
                          output_names=["logits"], dynamic_axes={**dict.fromkeys(NAMES, axes), "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    if not files["fp32"].exists():
        optimizer.optimize_model(str(raw), model_type="bert", num_heads=12, hidden_size=384).save_model_to_file(str(files["fp32"]))
    for name, kw in INT8.items():
        if not files[name].exists():
            quantize_dynamic(files["fp32"], files[name], weight_type=QuantType.QInt8, **{"reduce_range": False, **kw},
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    check = {}
    for name in ("raw", "fp32"):
        sess = ort.InferenceSession(str(raw if name == "raw" else files["fp32"]), providers=["CPUExecutionProvider"])
        check[f"ort_{name}_max_abs_diff_vs_torch"] = float(np.abs(sess.run(None, dict(zip(NAMES, arrays, strict=True)))[0] - ref).max())
    return {"files": files, "check": check}


def ort_scorer(path: Path, scorer, threads: int, batch_size: int):
    """``pairs -> scores`` through an ORT session: tokenized and batched by length like the torch scorer."""
    import onnxruntime as ort

    from pipeline.scorers.tokenization import length_batches

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # spinning threads lose to any other job
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def score(pairs) -> np.ndarray:
        encoded = scorer.encode(pairs)
        scores = np.zeros(len(pairs), dtype=np.float32)
        for batch in length_batches([len(q) + len(p) + 3 for q, p in encoded], batch_size, scorer.batch_tokens,
                                    scorer.pad_multiple):
            arrays = scorer._batch_arrays([encoded[i] for i in batch], scorer.pad_multiple)
            scores[batch] = sess.run(None, dict(zip(NAMES, arrays, strict=True)))[0]
        return scores

    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/ce-minilm"))
    parser.add_argument("--bundle", type=Path, default=Path(".cache/ce/scifact/eval-test.json.gz"))
    parser.add_argument("--onnx-dir", type=Path, default=Path(".cache/onnx-int8"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ndcg-queries", type=int, default=20)
    args = parser.parse_args()
    import onnx
    import onnxruntime as ort
    import torch

    from pipeline.scorers.cross_encoder import CrossEncoderScorer

    torch.set_num_threads(args.threads)
    pairs, owners, qrels = load_pairs(args.bundle, args.ndcg_queries)
    one = pairs[:100]
    scorer = CrossEncoderScorer(args.model, device="cpu", precision="fp32", fast=False, attn_implementation="eager")
    exported = export(scorer, pairs, args.onnx_dir)
    st = baseline_model(args.model, "cpu", 384)
    runs = {"predict fp32": lambda p: st.predict(p, batch_size=32, show_progress_bar=False),
            **{f"ort {k}": ort_scorer(f, scorer, args.threads, args.batch_size) for k, f in exported["files"].items()}}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn(one)  # warm-up
    result = {"versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "torch": torch.__version__},
              "threads": args.threads, "batch_size": args.batch_size, "pairs": len(one), "repeats": args.repeats,
              "loadavg_before": os.getloadavg(), **exported["check"]}
    for _ in range(args.repeats):  # interleaved, so that another job's load hits every variant alike
        for name, fn in runs.items():
            start = time.perf_counter()
            fn(one)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    result["seconds"] = {k: [round(t, 3) for t in v] for k, v in times.items()}
    result["pairs_per_s"] = {k: round(len(one) / t, 2) for k, t in med.items()}
    result["speedup_vs_predict"] = {k: round(med["predict fp32"] / t, 3) for k, t in med.items()}
    result["loadavg_after_timing"] = os.getloadavg()
    print(json.dumps(result), flush=True)  # the throughput part, before the slower quality check
    ref = np.asarray(runs["predict fp32"](pairs))
    base = ndcg(owners, ref, qrels)
    result["ndcg10"] = {"queries": len(qrels), "predict fp32": base}
    for name, fn in list(runs.items())[1:]:
        got = fn(pairs)
        result["ndcg10"][name] = ndcg(owners, got, qrels)
        result.setdefault("ndcg10_loss", {})[name] = base - result["ndcg10"][name]
        result.setdefault("score_correlation", {})[name] = float(np.corrcoef(ref, got)[0, 1])
    result["loadavg_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
