"""The multilingual cross-encoder on the e5 base: train ranking modules, rerank, choose the blend on dev (one GPU call).

``python -m training.multilingual.ml_ce --bundle runs/ml-ce/bundle.json.gz --base DIR --out OUT``

``--base``: an imported e5 folder (``python -m training e5-import``, or on the device machine the vocabulary-
restricted copy from ``training.multilingual.compact_e5 unpack``). The cross-encoder is the base with masked
mean pooling and a linear head (:func:`~pipeline.scorers.cross_encoder_folder.mean_pool_scorer`); pairs are
``<s> question </s></s> sentence </s>``. The word embeddings are never trained, so a module trained on the
restricted copy is valid on the full base. Systems (``--systems``):

- ``lora``: the ranking module (LoRA on query/key/value/dense + the head) on the training questions of every
  language except ``--zero-shot`` (no ranking data at all in that language); saved to ``OUT/ml-modules/lora/ranking``;
- ``lora-all``: the same on all six languages (the module to serve), ``OUT/ml-modules/lora/ranking-all``;
- ``lora-no-<lang>``: as ``lora`` with ``<lang>`` left out instead (another zero-shot language),
  ``OUT/ml-modules/lora/ranking-no-<lang>``;
- ``lang-mlm``: an MLM language module per language (LoRA r8 on its own text; ``training.multilingual.lang_mlm``)
  and a ranking module trained over them (``--zero-shot`` left out, as ``lora``), served as language + ranking:
  ``OUT/ml-modules/lora/{en,de,...,ranking-lm}``;
- ``lang-ft``: a ranking LoRA per language (``--lang-rank``, no head) trained on that language's questions over
  the ranking module (``--ranking-module``, default this run's ``lora-all``), served as ``[ranking, <lang>]``:
  ``OUT/ml-modules/lora/lang-ft/<lang>`` (:mod:`training.multilingual.lang_ranking`); ``lang-ft-sftm``: the same as
  sparse fine-tuning masks (``OUT/ml-modules/lora/lang-ft-sftm/<lang>``);
- ``ranking-module``: no training, the ``--ranking-module`` alone scored (the served module, a soup);
- ``full``: full fine-tuning (word embeddings frozen) on the ``lora`` data: the upper bound (scores only).

Each system reranks the fusion's top ``depth`` of the dev and held-out questions of all six languages; the
blend weight alpha (``alpha * minmax(reranker) + (1 - alpha) * minmax(fusion)``) is chosen on the dev
questions (TRAINING articles, never trained on) pooled over the languages the system was trained on, then
applied once to the held-out questions. ``OUT/results.json``: every number; ``OUT/scores.json``: the raw
scores, to recompute anything at home.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)
GRID = [round(i * 0.05, 2) for i in range(21)]
WORD_EMBEDDINGS = "encoder.embeddings.word_embeddings.weight"


def build_scorer(folder: Path, device: str, seed: int = 13):
    """``(mean-pool scorer with a freshly initialised head, tokenizer)``; the word embeddings frozen."""
    import torch
    from transformers import AutoTokenizer, BertModel

    from pipeline.scorers.cross_encoder_folder import mean_pool_scorer

    torch.manual_seed(seed)
    encoder = BertModel.from_pretrained(str(folder), add_pooling_layer=False)  # saved in fp32
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    model = mean_pool_scorer(encoder, head).to(device).eval()
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(str(folder))


def bundle_token_ids(tokenizer, bundle: dict) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for entry in bundle["languages"].values():
        texts = list(entry["sentences"].values()) + list(entry["questions"].values())
        for i in range(0, len(texts), 1024):
            for seq in tokenizer(texts[i:i + 1024])["input_ids"]:
                ids.update(seq)
    return ids


def missing_rows(model, tokenizer, bundle: dict) -> list[int]:
    """Token ids of the bundle's texts whose embedding row is all zeros (left out of a restricted base)."""
    import torch

    ids = bundle_token_ids(tokenizer, bundle) - {tokenizer.pad_token_id}
    rows = torch.tensor(sorted(ids), device=model.encoder.embeddings.word_embeddings.weight.device)
    zero = ~model.encoder.embeddings.word_embeddings.weight[rows].any(dim=1)
    return rows[zero].tolist()


def training_groups(bundle: dict, langs: list[str], negatives: int, seed: int) -> list[tuple[str, list[str]]]:
    """``(question, [positive, negative...])`` of the ``train`` questions: negatives sampled from the fusion's list."""
    rng = random.Random(seed)
    groups = []
    for lang in langs:
        entry = bundle["languages"][lang]
        sentences = entry["sentences"]
        pool = sorted(sentences)
        for qid in entry["split"]["train"]:
            pos = entry["answer"][qid]
            cands = [d for d, _ in entry["fusion"][qid] if d != pos]
            negs = rng.sample(cands, min(negatives, len(cands)))
            while len(negs) < negatives:
                d = rng.choice(pool)
                if d != pos and d not in negs:
                    negs.append(d)
            groups.append((entry["questions"][qid], [sentences[pos]] + [sentences[d] for d in negs]))
    rng.shuffle(groups)
    return groups


def score_pairs(model, tokenizer, queries: list[str], docs: list[str], max_length: int, batch_size: int) -> list[float]:
    """One logit per pair (fp32 on CPU, bf16 autocast on CUDA), tokenized as the served scorer does."""
    import torch

    from pipeline.scorers.modular import pair_logits

    device = next(model.parameters()).device
    order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(docs[i]))
    out = [0.0] * len(queries)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            enc = tokenizer([queries[j] for j in idx], [docs[j] for j in idx], truncation="longest_first",
                            max_length=max_length, padding=True, return_tensors="pt").to(device)
            for j, v in zip(idx, pair_logits(model(**enc)).float().cpu().tolist(), strict=True):
                out[j] = v
    return out


def rerank(score_fn, bundle: dict, split: str) -> dict:
    """``lang -> qid -> {doc: score}`` over the fusion lists of ``split``."""
    runs = {}
    for lang, entry in bundle["languages"].items():
        qids = entry["split"][split]
        pairs = [(q, d) for q in qids for d, _ in entry["fusion"][q]]
        scores = score_fn([entry["questions"][q] for q, _ in pairs], [entry["sentences"][d] for _, d in pairs], lang)
        run: dict = {}
        for (q, d), s in zip(pairs, scores, strict=True):
            run.setdefault(q, {})[d] = s
        runs[lang] = run
    return runs


def ndcg10(answer: dict[str, str], run: dict[str, dict[str, float]]) -> float:
    """Mean nDCG@10 with one relevant sentence per question (ties broken by doc id, as trec_eval does)."""
    import math

    total = 0.0
    for q, docs in run.items():
        ranked = sorted(docs, key=lambda d: (-docs[d], d))[:10]
        total += 1 / math.log2(ranked.index(answer[q]) + 2) if answer[q] in ranked else 0.0
    return total / max(len(run), 1)


def blend(rerank_run: dict, fusion: dict, alpha: float) -> dict:
    from pipeline.core.score_fusion import interpolate_scores

    out = {}
    for q, docs in rerank_run.items():
        first = dict((d, s) for d, s in fusion[q])
        ids = list(docs)
        out[q] = dict(zip(ids, interpolate_scores([docs[d] for d in ids], [first[d] for d in ids], alpha), strict=True))
    return out


def report(bundle: dict, dev: dict, held: dict, trained_on: list[str]) -> dict:
    """Dev curves, the pooled dev alpha (over ``trained_on``), and held-out nDCG@10 per language."""
    langs = list(bundle["languages"])
    curves = {lang: {a: ndcg10(bundle["languages"][lang]["answer"], blend(dev[lang], bundle["languages"][lang]["fusion"], a))
                     for a in GRID} for lang in langs}
    pooled = {a: sum(curves[lang][a] for lang in trained_on) / len(trained_on) for a in GRID}
    alpha = min(a for a in GRID if pooled[a] >= max(pooled.values()) - 1e-9)
    rows = {}
    for lang in langs:
        entry = bundle["languages"][lang]
        fusion_run = {q: dict((d, s) for d, s in entry["fusion"][q]) for q in entry["split"]["heldout"]}
        fusion = ndcg10(entry["answer"], fusion_run)
        rows[lang] = {"trained": lang in trained_on, "fusion": fusion, "dev_fusion": curves[lang][0.0],
                      "dev_rerank_only": curves[lang][1.0], "rerank_only": ndcg10(entry["answer"], held[lang]),
                      "blend": ndcg10(entry["answer"], blend(held[lang], entry["fusion"], alpha))}
        rows[lang]["gain"] = rows[lang]["blend"] - fusion
    return {"alpha": alpha, "dev_pooled": pooled, "languages": rows}


def train_lora_module(model, tokenizer, groups, args, out: Path, identity: str, langs: list[str]) -> dict:
    from training.language_modules.common import write_meta
    from training.language_modules.trainer import TrainSettings, train_lora

    start = time.perf_counter()
    losses = train_lora(model, tokenizer, groups, TrainSettings(args.epochs, args.batch_questions, args.lr, args.max_length,
                                                                args.seed), out, rank=args.rank, alpha=args.rank * 2,
                        train_head=True)
    meta = {"role": "ranking", "kind": "lora", "base": "e5", "base_sha256": identity, "langs": langs, "rank": args.rank,
            "alpha": args.rank * 2, "lr": args.lr, "epochs": args.epochs, "train_questions": len(groups),
            "losses": losses, "seconds": round(time.perf_counter() - start, 1), "max_length": args.max_length}
    write_meta(out, **meta)
    return meta


def modular_score_fn(model, tokenizer, folder: Path, args):
    """Scores through the served path: the base (zero head) + the saved module in a :class:`ModuleRegistry`."""
    from training.multilingual.lang_ranking import language_score_fn

    return language_score_fn(model, tokenizer, folder, folder, [], args)  # the ranking module alone


def language_modules_system(base, tokenizer, bundle: dict, trained: list[str], args, modules: Path, identity: str):
    """``lang-mlm``: an MLM language module per language (all six), the ranking module over them (``trained`` only)."""
    import copy

    import torch

    from pipeline.scorers.language_modules import ModuleRegistry, load_module
    from pipeline.scorers.modular import ModularScorer
    from training.language_modules.common import write_meta
    from training.language_modules.trainer import TrainSettings
    from training.multilingual.lang_mlm import language_texts, train_mlm_module, train_ranking_over_languages

    start = time.perf_counter()
    kept = sorted(bundle_token_ids(tokenizer, bundle))
    lang_modules, meta = {}, {"languages": {}}
    for lang, entry in bundle["languages"].items():
        texts = language_texts(entry)[: args.limit * 8 or None]  # --limit: a smoke run
        t0 = time.perf_counter()
        losses = train_mlm_module(base, tokenizer, texts, modules / lang, kept, rank=args.lang_rank,
                                  epochs=args.lang_epochs, seed=args.seed)
        info = {"role": "language", "kind": "lora", "base": "e5", "base_sha256": identity, "lang": lang, "texts": len(texts),
                "losses": losses, "rank": args.lang_rank, "epochs": args.lang_epochs,
                "seconds": round(time.perf_counter() - t0, 1), "objective": "MLM, decoder = frozen embeddings (kept rows)"}
        write_meta(modules / lang, **info)
        lang_modules[lang] = load_module(modules / lang, lang)
        meta["languages"][lang] = info
    groups = {lang: training_groups(bundle, [lang], args.negatives, args.seed) for lang in trained}
    settings = TrainSettings(args.epochs, args.batch_questions, args.lr, args.max_length, args.seed)
    losses = train_ranking_over_languages(base, tokenizer, groups, {x: lang_modules[x] for x in trained}, settings,
                                          modules / "ranking-lm", rank=args.rank)
    write_meta(modules / "ranking-lm", role="ranking", kind="lora", base="e5", base_sha256=identity, langs=trained,
               under="the language module of each batch's language", rank=args.rank, lr=args.lr, epochs=args.epochs,
               losses=losses)
    meta.update(ranking_losses=losses, seconds=round(time.perf_counter() - start, 1))
    net = copy.deepcopy(base)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    registry = ModuleRegistry(net)
    for module in lang_modules.values():
        registry.add(module)
    registry.add(load_module(modules / "ranking-lm", "ranking-lm"))
    scorer = ModularScorer(registry, tokenizer, {x: [x, "ranking-lm"] for x in lang_modules}, max_length=args.eval_length,
                           batch_size=args.eval_batch)
    return meta, lambda qs, ds, lang: scorer.score_with_modules(qs, ds, [lang, "ranking-lm"])


def run(args) -> dict:
    import copy

    import torch

    from training.language_modules.trainer import TrainSettings, train_groups
    from training.multilingual.ce_data import read_bundle
    from training.multilingual.compact_e5 import base_identity_of

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bundle = read_bundle(args.bundle)
    if args.limit:  # smoke runs: a few questions per split
        for entry in bundle["languages"].values():
            entry["split"] = {k: v[:args.limit] for k, v in entry["split"].items()}
    langs = list(bundle["languages"])
    trained = [x for x in langs if x != args.zero_shot]
    identity = base_identity_of(args.base)
    base, tokenizer = build_scorer(args.base, device, args.seed)
    lost = missing_rows(base, tokenizer, bundle)
    if lost:  # the restricted base was packed for other texts: scores would silently use zero embeddings
        raise SystemExit(f"{len(lost)} token ids of the bundle have no embedding row in {args.base}, e.g. {lost[:10]}")
    modules = args.out / "ml-modules" / "lora"
    results: dict = {"base": identity, "device": device, "zero_shot": args.zero_shot, "systems": {}, "timings": {}}
    scores: dict = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for system in args.systems.split(","):
        start = time.perf_counter()
        left_out = system.removeprefix("lora-no-") if system.startswith("lora-no-") else None
        on = langs if system == "lora-all" else [x for x in langs if x != left_out] if left_out else trained
        groups = training_groups(bundle, on, args.negatives, args.seed)
        if system in ("lora", "lora-all") or left_out:
            folder = modules / {"lora": "ranking", "lora-all": "ranking-all"}.get(system, f"ranking-no-{left_out}")
            meta = train_lora_module(base, tokenizer, groups, args, folder, identity, on)
            score_fn = modular_score_fn(copy.deepcopy(base), tokenizer, folder, args)
        elif system == "full":
            model = copy.deepcopy(base)
            for name, p in model.named_parameters():
                p.requires_grad_(name != WORD_EMBEDDINGS)
            epochs = args.full_epochs or args.epochs
            losses = train_groups(model, tokenizer, groups, TrainSettings(epochs, args.batch_questions, args.full_lr,
                                                                          args.max_length, args.seed))
            meta = {"lr": args.full_lr, "epochs": epochs, "losses": losses, "train_questions": len(groups)}
            score_fn = lambda qs, ds, lang, m=model: score_pairs(m, tokenizer, qs, ds, args.eval_length, args.eval_batch)  # noqa: E731
        elif system == "lang-mlm":
            meta, score_fn = language_modules_system(base, tokenizer, bundle, trained, args, modules, identity)
        elif system in ("lang-ft", "lang-ft-sftm", "ranking-module"):  # modules over a ranking module (lang_ranking)
            from training.multilingual.lang_ranking import language_score_fn, train_language_modules

            on = langs
            ranking = args.ranking_module or modules / "ranking-all"
            if not (ranking / "adapter_config.json").is_file():
                raise SystemExit(f"{system} needs a ranking module at {ranking}: run lora-all first or pass --ranking-module")
            kind, meta, scored = ("sftm" if system.endswith("sftm") else "lora"), {"ranking_module": str(ranking)}, []
            if system != "ranking-module":  # ranking-module: that module alone, scored (a served one, a soup)
                meta = train_language_modules(base, tokenizer, bundle, ranking, on, args, modules / system, identity, kind)
                scored = on
            score_fn = language_score_fn(copy.deepcopy(base), tokenizer, ranking, modules / system, scored, args)
        else:
            raise ValueError(f"unknown system {system!r} (lora, lora-all, lora-no-<lang>, full, lang-mlm, lang-ft, lang-ft-sftm, ranking-module)")
        trained_s = time.perf_counter() - start
        dev, held = rerank(score_fn, bundle, "dev"), rerank(score_fn, bundle, "heldout")
        results["systems"][system] = {"trained_on": on, "train": meta, **report(bundle, dev, held, on)}
        scores[system] = {"dev": dev, "heldout": held}
        results["timings"][system] = {"train_s": round(trained_s, 1), "total_s": round(time.perf_counter() - start, 1)}
        logger.info("%s done in %.1fs: alpha %.2f", system, time.perf_counter() - start, results["systems"][system]["alpha"])
        print_table(system, results["systems"][system])
        # after every system, so a run cut short by its time limit still returns what it finished
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        (args.out / "scores.json").write_text(json.dumps(scores))
    return results


def print_table(system: str, res: dict) -> None:
    print(f"{system}: alpha {res['alpha']:.2f} (dev, pooled over {','.join(res['trained_on'])})")
    print("lang\tfusion\trerank\tblend\tgain\tdev fusion\tdev rerank")
    for lang, r in res["languages"].items():
        mark = "" if r["trained"] else " (zero-shot)"
        print(f"{lang}{mark}\t{r['fusion']:.4f}\t{r['rerank_only']:.4f}\t{r['blend']:.4f}\t{r['gain']:+.4f}\t"
              f"{r['dev_fusion']:.4f}\t{r['dev_rerank_only']:.4f}", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="training.multilingual.ce_data output")
    parser.add_argument("--base", type=Path, required=True, help="imported e5 folder (full or vocabulary-restricted)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--systems", default="lora,lora-all,full")
    parser.add_argument("--zero-shot", default="ar", help="language given no ranking data (lora, full)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-questions", type=int, default=32)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--lr", type=float, default=5e-4, help="LoRA learning rate")
    parser.add_argument("--full-lr", type=float, default=4e-5)
    parser.add_argument("--full-epochs", type=int, default=0, help="epochs of full fine-tuning (0: --epochs)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=160, help="tokens per training pair")
    parser.add_argument("--eval-length", type=int, default=256, help="tokens per scored pair (as served)")
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--lang-rank", type=int, default=8, help="LoRA rank of the MLM language modules (lang-mlm)")
    parser.add_argument("--lang-epochs", type=int, default=10)
    parser.add_argument("--ranking-module", type=Path, help="lang-ft: the ranking module under the language modules "
                        "(default: this run's lora-all)")
    parser.add_argument("--lang-ft-epochs", type=int, default=2, help="lang-ft: epochs per language module")
    parser.add_argument("--lang-ft-lr", type=float, default=2e-4, help="lang-ft: learning rate of the language modules")
    parser.add_argument("--lang-sftm-lr", type=float, default=1e-4, help="lang-ft-sftm: lr of the masked phase")
    parser.add_argument("--lang-sftm-density", type=float, default=0.01, help="lang-ft-sftm: share of weights kept")
    parser.add_argument("--limit", type=int, default=0, help="questions per split and language (smoke runs)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--device")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
