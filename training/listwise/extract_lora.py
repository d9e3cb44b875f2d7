"""A compact LoRA adapter from a fully fine-tuned listwise model (truncated SVD of the weight deltas).

Full fine-tuning learns FIRST's task far better than LoRA training on the 135M model (dev top-1 0.66
vs 0.11, models/first-smollm2/MODEL_CARD.md), but the result is a 540 MB checkpoint. This writes the
difference to the base as a standard peft adapter that the ``listwise`` stage loads (and merges) like
any other: every linear layer of the decoder and the (tied) token embeddings get ``delta ~= B @ A`` of
rank ``r`` (the best rank-r approximation, Eckart-Young), the RMS norms are stored whole
(``modules_to_save``: a few thousand numbers). ``fidelity`` measures what the truncation costs.

    python -m training.listwise.extract_lora --base smollm2-135m --tuned checkpoints/first-full \\
        --rank 64 --out models/first-smollm2-full
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from training.listwise.trainer import LORA_TARGETS

logger = logging.getLogger(__name__)
NORMS = ["input_layernorm", "post_attention_layernorm", "norm"]


def low_rank(delta: Any, rank: int) -> tuple[Any, Any]:
    """``(B, A)`` with ``B @ A`` the best rank-``rank`` approximation of ``delta`` ([out, in]); a matrix
    smaller than ``rank`` is exact, zero-padded to ``rank`` (every adapter matrix has the configured shape)."""
    import torch

    u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
    r = min(rank, s.numel())
    b, a = u[:, :r] * s[:r], vh[:r]
    if r < rank:
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - r)], dim=1)
        a = torch.cat([a, a.new_zeros(rank - r, a.shape[1])], dim=0)
    return b, a


def extract(base: Any, tuned: Any, rank: int, embeddings: bool = True) -> Any:
    """A peft model on ``base`` whose adapter reproduces ``tuned`` up to rank ``rank`` per matrix."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    targets = LORA_TARGETS + (["embed_tokens"] if embeddings else [])
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets,
                        modules_to_save=NORMS, task_type="CAUSAL_LM")
    tuned_state = tuned.state_dict()
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, module in model.named_modules():
            key = name.removeprefix("base_model.model.")
            if isinstance(module, LoraLayer):
                delta = tuned_state[f"{key}.weight"].float() - base_state[f"{key}.weight"].float()
                if "default" in module.lora_embedding_A:  # embedding: delta = (B @ A).T
                    b, a = low_rank(delta.T, rank)
                    module.lora_embedding_A["default"].data = a.contiguous()
                    module.lora_embedding_B["default"].data = b.contiguous()
                else:
                    b, a = low_rank(delta, rank)
                    module.lora_A["default"].weight.data = a.contiguous()
                    module.lora_B["default"].weight.data = b.contiguous()
            elif hasattr(module, "modules_to_save") and "default" in getattr(module, "modules_to_save", {}):
                module.modules_to_save["default"].weight.copy_(tuned_state[f"{key}.weight"])
    return model


def fidelity(tuned: Any, extracted: Any, tokenizer: Any, windows: list, settings: Any) -> dict[str, float]:
    """How close the extracted model's first-token identifier scores are to the tuned model's."""
    import torch

    from pipeline.scorers.listwise import FirstListwiseScorer

    pairs = [(w.query, w.passages) for w in windows]
    m = max((len(p) for _, p in pairs), default=2)
    scores = [FirstListwiseScorer(model, tokenizer, window=m, stride=m - 1,
                                  passage_tokens=settings.passage_tokens, query_tokens=settings.query_tokens)
              .first_token_scores(pairs) for model in (tuned, extracted)]
    same_top = corr = 0.0
    for a, b in zip(*scores, strict=True):
        a, b = torch.tensor(a), torch.tensor(b)
        same_top += int(a.argmax() == b.argmax())
        corr += float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    n = len(pairs)
    return {"top1_same": same_top / max(n, 1), "score_correlation": corr / max(n, 1), "windows": n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2-135m", help="the base the tuned model started from")
    parser.add_argument("--tuned", type=Path, required=True, help="fully fine-tuned model folder (--lora-r 0)")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--no-embeddings", action="store_true", help="leave the token embeddings at the base")
    parser.add_argument("--teacher", type=Path, default=None, help="ranking set: measure fidelity on a few windows")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch
    from safetensors.torch import load_file, save_file

    from pipeline.scorers.llm_loading import load_causal_lm

    if not (args.tuned / "config.json").is_file():
        print(f"error: {args.tuned} is not a model folder (config.json missing)", file=sys.stderr)
        return 2
    base, tokenizer = load_causal_lm(args.base, device="cpu", dtype="float32")
    tuned, _ = load_causal_lm(str(args.tuned), device="cpu", dtype="float32")
    model = extract(base, tuned, args.rank, embeddings=not args.no_embeddings)
    model.save_pretrained(args.out)
    weights = args.out / "adapter_model.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(weights)).items()}, str(weights),
              metadata={"format": "pt"})
    config_path = args.out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = args.base
    config_path.write_text(json.dumps(config, indent=2))
    summary: dict[str, Any] = {"tuned": str(args.tuned), "rank": args.rank, "embeddings": not args.no_embeddings,
                               "adapter_mb": round(weights.stat().st_size / 1e6, 1)}
    if args.teacher:
        from training.listwise.data import read_passages, read_rankings, sample_windows
        from training.listwise.trainer import TrainSettings

        windows = list(sample_windows(read_rankings(args.teacher)[: args.windows], read_passages(args.teacher),
                                      20, 100, 1, shuffle_prob=1.0, seed=7, include_top=1))
        merged, _ = load_causal_lm(args.base, adapter=args.out, device="cpu", dtype="float32")
        summary["fidelity"] = fidelity(tuned, merged, tokenizer, windows, TrainSettings())
    (args.out / "extraction.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
