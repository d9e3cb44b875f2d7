"""Encoding speed of a Mamba bi-encoder vs MiniLM at 128, 512 and 2,048 tokens (the "Mamba Retriever" claim).

Times a forward pass (encoding, no gradients) of each model over a batch of ``--batch-tokens``
tokens per length, with random token ids (never zeros), on CUDA with bf16 autocast (or CPU), as
the median of ``--repeats`` runs after warm-up, timed with CUDA events. MiniLM (BERT) has 512
positions: for 2,048 tokens its position table is extended (extra rows random); weights do not
change the speed. Mamba runs transformers' pure-PyTorch path: ``mambapy``'s parallel scan when
installed, and, with ``--sequential``, also the plain loop over positions. Prints a table with
MiniLM as the baseline measured in the same run::

    python benchmarks/mamba_vs_minilm_speed.py --minilm minilm --lengths 128 512 2048
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def build_minilm(path: str, max_len: int):
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    if path == "minilm":
        from pipeline.encoders.bi_encoders import minilm_path

        path = str(minilm_path())
    config = BertConfig.from_pretrained(path)
    config.max_position_embeddings = max(config.max_position_embeddings, max_len)
    model = BertModel(config, add_pooling_layer=False)
    state = {k.removeprefix("bert."): v.float() for k, v in load_file(str(Path(path) / "model.safetensors")).items()}
    pos = state.get("embeddings.position_embeddings.weight")
    if pos is not None and pos.shape[0] < config.max_position_embeddings:
        state["embeddings.position_embeddings.weight"] = pos.repeat(config.max_position_embeddings // pos.shape[0] + 1,
                                                                    1)[: config.max_position_embeddings]
    state.pop("embeddings.position_ids", None)
    model.load_state_dict(state, strict=False)
    return model.eval(), config.vocab_size, torch


def build_mamba(vocab: int, hidden: int, layers: int, parallel: bool):
    from transformers import MambaConfig, MambaModel

    config = MambaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, use_mambapy=parallel)
    return MambaModel(config).eval()


def time_forward(model, batch: int, length: int, vocab: int, device: str, repeats: int, mamba: bool) -> float:
    """Median seconds of one forward over ``batch`` x ``length`` random tokens."""
    import torch

    gen = torch.Generator().manual_seed(length)
    ids = torch.randint(1000, vocab, (batch, length), generator=gen).to(device)
    mask = torch.ones_like(ids)
    kwargs = {"use_cache": False} if mamba else {}
    cuda = device.startswith("cuda")
    times = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        for i in range(repeats + 2):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            t0 = time.perf_counter()
            out = model(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
            if cuda:
                end.record()
                torch.cuda.synchronize()
                elapsed = start.elapsed_time(end) / 1000
            else:
                elapsed = time.perf_counter() - t0
            if not torch.isfinite(out.float()).all():
                raise RuntimeError("non-finite output")
            if i >= 2:
                times.append(elapsed)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", default="minilm", help="'minilm' (the package) or a MiniLM folder")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--batch-tokens", type=int, default=65536, help="tokens per timed batch")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sequential", action="store_true", help="also time the sequential-loop scan")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    import importlib.util

    minilm, vocab, torch = build_minilm(args.minilm, max(args.lengths))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    parallel = importlib.util.find_spec("mambapy") is not None
    models = {"minilm": minilm.to(device), f"mamba-{'pscan' if parallel else 'loop'}":
              build_mamba(vocab, args.hidden, args.layers, parallel).to(device)}
    if args.sequential and parallel:
        models["mamba-loop"] = build_mamba(vocab, args.hidden, args.layers, False).to(device)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(f"device: {name}; torch {torch.__version__}; batch of {args.batch_tokens} tokens; median of {args.repeats}")
    print("params: " + ", ".join(f"{k} {sum(p.numel() for p in m.parameters()) / 1e6:.1f}M" for k, m in models.items()))
    rows = []
    print("length\tmodel\tbatch\tms/batch\ttokens/s\tvs minilm")
    for length in args.lengths:
        batch = max(1, args.batch_tokens // length)
        base = None
        for key, model in models.items():
            reps = 2 if key == "mamba-loop" else args.repeats
            secs = time_forward(model, batch, length, vocab, device, reps, key.startswith("mamba"))
            base = base or secs
            rows.append({"length": length, "model": key, "batch": batch, "seconds": secs,
                         "tokens_per_s": batch * length / secs, "speed_vs_minilm": base / secs})
            print(f"{length}\t{key}\t{batch}\t{secs * 1000:.2f}\t{batch * length / secs:,.0f}\t{base / secs:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
