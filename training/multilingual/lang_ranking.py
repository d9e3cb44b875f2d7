"""Per-language ranking modules stacked on one ranking module, and LoRA soups (issue 20).

Two ways to get more out of the ranking module of :mod:`training.multilingual.ml_ce` without a bigger base:

- :func:`train_language_modules`: for each language a small LoRA (no head) or a sparse fine-tuning mask
  (``kind='sftm'``) trained on that language's own
  ranking questions with the ranking module merged underneath; served as ``[ranking, <lang>]`` by the
  modular reranker (the language module swaps per request, the base stays loaded). A language without a
  module falls back to the ranking module alone.
- :func:`soup`: the uniform average of several LoRA modules trained from the same base (different seeds):
  ``mean_i(B_i A_i) * s`` is itself a LoRA of rank ``sum(r_i)`` (the A's stacked, the B's side by side and
  divided by their count), so a soup loads and swaps like any module and costs one forward pass. Heads and
  other replaced tensors are averaged.

``python -m training.multilingual.lang_ranking soup --module DIR --module DIR ... --out DIR``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def train_language_modules(base, tokenizer, bundle: dict, ranking: Path, langs: list[str], args, out: Path,
                           identity: str, kind: str = "lora") -> dict:
    """Train ``out/<lang>`` for each of ``langs`` over the ranking module at ``ranking``; returns their metadata.

    ``kind`` 'lora': a LoRA of rank ``args.lang_rank`` (lr ``args.lang_ft_lr``); 'sftm': a sparse fine-tuning mask
    of ``args.lang_sftm_density`` of the encoder's weights (full fine-tune at lr 3e-5, then only the chosen weights
    at ``args.lang_sftm_lr``), the word embeddings frozen in both.
    """
    import time

    from pipeline.scorers.language_modules import load_module, save_sftm
    from training.language_modules.common import write_meta
    from training.language_modules.trainer import TrainSettings, train_lora, train_sftm
    from training.multilingual.ml_ce import WORD_EMBEDDINGS, training_groups

    if kind not in ("lora", "sftm"):
        raise ValueError(f"kind must be 'lora' or 'sftm', got {kind!r}")
    under = load_module(ranking, "ranking")
    lr = args.lang_ft_lr if kind == "lora" else args.lang_sftm_lr
    settings = TrainSettings(args.lang_ft_epochs, args.batch_questions, lr, args.max_length, args.seed)
    meta = {}
    for lang in langs:
        start = time.perf_counter()
        groups = training_groups(bundle, [lang], args.negatives, args.seed)
        info = {"role": "language", "kind": kind, "base": "e5", "base_sha256": identity, "lang": lang,
                "over": str(ranking.name), "objective": "ranking (listwise softmax) on this language's questions",
                "train_questions": len(groups), "lr": lr, "epochs": args.lang_ft_epochs}
        if kind == "lora":
            losses = train_lora(base, tokenizer, groups, settings, out / lang, under=[under], rank=args.lang_rank,
                                alpha=2 * args.lang_rank, train_head=False)
            info["rank"] = args.lang_rank
        else:
            deltas, losses = train_sftm(base, tokenizer, groups, settings, args.lang_sftm_density, under=[under],
                                        frozen=(WORD_EMBEDDINGS,))
            info.update(density=args.lang_sftm_density, full_lr=3e-5)
            save_sftm(out / lang, deltas, info)
        meta[lang] = {**info, "losses": losses, "seconds": round(time.perf_counter() - start, 1)}
        write_meta(out / lang, **meta[lang])
    return meta


def language_score_fn(model, tokenizer, ranking: Path, modules: Path, langs: list[str], args):
    """Scores through the served path: ``[ranking, <lang>]`` for a language with a module, else ``[ranking]``."""
    import torch

    from pipeline.scorers.language_modules import ModuleRegistry, load_module
    from pipeline.scorers.modular import ModularScorer

    with torch.no_grad():  # the served base has a zero head; the ranking module replaces it
        model.head.weight.zero_()
        model.head.bias.zero_()
    registry = ModuleRegistry(model)
    registry.add(load_module(ranking, "ranking"))
    for lang in langs:
        registry.add(load_module(modules / lang, lang))
    scorer = ModularScorer(registry, tokenizer, {x: ["ranking", x] for x in langs}, fallback=["ranking"],
                           max_length=args.eval_length, batch_size=args.eval_batch)
    return lambda qs, ds, lang: scorer.score_with_modules(qs, ds, ["ranking", lang] if lang in langs else ["ranking"])


def soup(folders: list[Path], out: Path) -> Path:
    """Average LoRA (peft) folders of one base into one peft folder at ``out`` (rank = the sum of theirs)."""
    import torch
    from safetensors.torch import load_file, save_file

    if len(folders) < 2:
        raise ValueError("a soup needs at least two modules")
    configs = [json.loads((f / "adapter_config.json").read_text()) for f in folders]
    scales = {float(c["lora_alpha"]) / float(c["r"]) for c in configs}
    if len(scales) != 1 or any(c.get("use_rslora") or c.get("use_dora") for c in configs):
        raise ValueError(f"modules must share one plain LoRA scale (alpha / r), got {sorted(scales)}")
    if len({tuple(sorted(c["target_modules"])) for c in configs}) != 1:
        raise ValueError("modules must adapt the same target modules")
    tensors = [load_file(str(f / "adapter_model.safetensors")) for f in folders]
    keys = set(tensors[0])
    if any(set(t) != keys for t in tensors[1:]):
        raise ValueError("modules must hold the same tensors")
    k = len(folders)
    merged = {}
    for key in sorted(keys):
        parts = [t[key].float() for t in tensors]
        if ".lora_A." in key:  # r_i x in, stacked
            merged[key] = torch.cat(parts, dim=0).contiguous()
        elif ".lora_B." in key:  # out x r_i, side by side, each weighted 1/k
            merged[key] = (torch.cat(parts, dim=1) / k).contiguous()
        else:  # replaced whole (the head): the mean
            merged[key] = torch.stack(parts).mean(dim=0).contiguous()
    rank = sum(int(c["r"]) for c in configs)
    config = dict(configs[0], r=rank, lora_alpha=scales.pop() * rank)
    meta = {"role": "ranking", "kind": "lora", "soup_of": [str(f) for f in folders], "rank": rank}
    metas = [json.loads((f / "module.json").read_text()) for f in folders if (f / "module.json").is_file()]
    if len({m.get("base_sha256") for m in metas}) > 1:
        raise ValueError(f"modules were trained on different bases: {sorted(str(m.get('base_sha256')) for m in metas)}")
    if metas:
        meta.update(base_sha256=metas[0].get("base_sha256"), base=metas[0].get("base"))
    out.mkdir(parents=True, exist_ok=True)  # every check passed: only now is anything written
    save_file(merged, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (out / "module.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("soup", help="average LoRA modules of one base (different seeds) into one module")
    s.add_argument("--module", type=Path, action="append", required=True)
    s.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        path = soup(args.module, args.out)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
