"""Cost of per-request language modules: swap time, memory per module, reranking and service latency.

    python -m benchmarks.module_swap --language de [--repeats 50] [--requests 20] [--synthetic]

``--synthetic`` builds random-valued modules of the trained shapes (LoRA r=8 on query/key/value/
dense; SFTM 2% ranking + 1% language) on the real base, for when no module is
trained yet: swap time, memory and latency depend on the shapes, not on the values.

Everything is measured in this run against its own baseline:

1. swap: ``registry.activated(modules)`` enter + exit (apply and exact restore) for each module
   family, against an empty activation;
2. memory: bytes each loaded module holds, and its file size;
3. rerank: one query x ``--depth`` XQuAD-R sentences scored with base + ranking + language
   module, against the same stage with no module active;
4. service: ``POST /search`` latency (in-process HTTP, BM25 top ``--depth`` >> modular_ce) with
   modules vs the same pipeline whose reranker has none;
5. with ``--ml-config configs/multilingual.yaml``: the configured ``ml-<lang>`` / ``ml-sftm-<lang>``
   pipelines (BM25 + e5 fusion >> modular_ce, as configured, interpolation included) vs the same
   pipeline with the base reranker alone and vs the fusion alone (needs the collection's e5 index:
   ``python -m indexer build --dataset .../xquad-r/<lang> --collection xquad-r-<lang> --config configs/multilingual.yaml --index e5``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def describe(label: str, ms: list[float], baseline: list[float] | None = None) -> None:
    med = statistics.median(ms)
    p90 = sorted(ms)[int(0.9 * (len(ms) - 1))]
    ratio = f"  x{med / statistics.median(baseline):.2f} vs baseline" if baseline else ""
    print(f"{label:<44} median {med:9.3f} ms   p90 {p90:9.3f} ms{ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language", default="de")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--modules", default="ml-modules")
    parser.add_argument("--ranking", default="ranking-all", help="the ranking module under the language module")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "xquad-r")
    parser.add_argument("--index-root", type=Path, default=REPO / "indexes")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--base", default="e5", help="e5 (the served multilingual base) or a reranker folder name")
    parser.add_argument("--families", default="lora-merge,lora-hook,sftm",
                        help="module families to time (e.g. lora-merge,lora-hook for a base with LoRA modules only)")
    parser.add_argument("--synthetic", action="store_true", help="random modules of the trained shapes (see above)")
    parser.add_argument("--ml-config", type=Path, help="also time this config's ml-<lang> pipelines (section 5)")
    parser.add_argument("--only-ml", action="store_true", help="run section 5 only")
    args = parser.parse_args()
    if args.synthetic:
        import tempfile

        args.modules, args.ranking = "lang-modules", "ranking"
        args.models_dir = synthetic_modules(Path(tempfile.mkdtemp()), args.models_dir, args.base, args.language)

    import torch

    from pipeline.core.types import Document, Hit, Query
    from pipeline.scorers.modular import ModularScorer, load_registry, module_folder
    from pipeline.scorers.passages import InMemoryDocuments, Passages
    from pipeline.stages.rerank import RerankStage
    from training.language_modules.xquad import load_language, question_split

    torch.set_num_threads(args.threads)
    lang = args.language
    if args.only_ml:
        ml_latency(args, lang)
        return 0
    families = {"lora-merge": ("lora", True), "lora-hook": ("lora", False), "sftm": ("sftm", True)}
    families = {k: v for k, v in families.items() if k in args.families.split(",")}
    names = [args.ranking, lang]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, language {lang}")

    print("\n# 1. swap cost (apply + exact restore, no forward pass)")
    registries = {}
    for family, (kind, merge) in families.items():
        registries[family] = load_registry(args.base, args.models_dir, args.modules, kind, names, merge_lora=merge)

    def swap(registry, modules):
        with registry.activated(modules):
            pass

    any_registry = next(iter(registries.values()))[0]  # the same base under every family
    empty = timed(lambda: swap(any_registry, []), args.repeats)
    describe("baseline: empty activation", empty)
    for family in families:
        registry = registries[family][0]
        describe(f"{family}: {lang} alone", timed(lambda r=registry: swap(r, [lang]), args.repeats), empty)
        describe(f"{family}: ranking + {lang}", timed(lambda r=registry: swap(r, names), args.repeats), empty)

    print("\n# 2. memory per module")
    base_bytes = sum(p.numel() * p.element_size() for p in any_registry.model.parameters())
    print(f"{'base model (fp32 parameters)':<44} {base_bytes / 2**20:9.2f} MiB")
    for family in [f for f in ("lora-merge", "sftm") if f in families]:
        kind, registry = families[family][0], registries[family][0]
        for name in names:
            module = registry.get(name)
            folder = module_folder(args.models_dir, args.modules, kind, name)
            on_disk = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
            print(f"{kind + '/' + name + ' in memory / on disk':<44} {module.nbytes / 2**20:9.3f} MiB / "
                  f"{on_disk / 2**20:.3f} MiB  ({100 * module.nbytes / base_bytes:.2f}% of the base)")

    print(f"\n# 3. rerank one query x {args.depth} sentences")
    data = load_language(args.data, lang)
    _, heldout = question_split(data)
    qid = heldout[0]
    docs = sorted(data.sentences)[: args.depth]
    hits = {qid: [Hit(qid, d, 0.0) for d in docs]}
    passages = Passages(InMemoryDocuments([Document(i, "", s) for i, s in data.sentences.items()]), titles=False)
    for family, (kind, _) in families.items():
        registry, tokenizer = registries[family]
        stage = RerankStage(ModularScorer(registry, tokenizer, {lang: names}, kind=kind, detector=None), passages,
                            top_n=None, name="modular_ce")
        with_module = [Query(qid, data.questions[qid], lang)]
        without = [Query(qid, data.questions[qid], "xx")]  # no module: the bare base forward pass
        stage(with_module, hits)
        base_ms = timed(lambda s=stage, w=without: s(w, hits), max(5, args.repeats // 5))
        describe(f"{family}: base reranker, no module", base_ms)
        describe(f"{family}: ranking + {lang} modules", timed(lambda s=stage, w=with_module: s(w, hits), max(5, args.repeats // 5)), base_ms)

    print(f"\n# 4. service latency, POST /search (bm25 top {args.depth} >> modular_ce), {args.requests} requests")
    service_latency(args, lang)
    if args.ml_config:
        ml_latency(args, lang)
    return 0


def synthetic_modules(root: Path, models_dir: Path, base: str, lang: str) -> Path:
    """``root/<base>`` -> the real base; ``root/lang-modules/{lora,sftm}/{ranking,lang}`` random, trained shapes."""
    import torch
    from peft import LoraConfig, get_peft_model

    from pipeline.scorers.language_modules import Sparse, save_sftm
    from pipeline.scorers.modular import load_base
    from training.language_modules.trainer import LORA_TARGETS

    (root / base).symlink_to((models_dir / base).resolve())
    model, _, _ = load_base(base, models_dir)
    g = torch.Generator().manual_seed(0)
    for name in ["ranking", lang]:
        peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=8, lora_alpha=16,
                                    target_modules=list(LORA_TARGETS)))
        with torch.no_grad():
            for pname, p in peft_model.named_parameters():
                if "lora_B" in pname:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        peft_model.save_pretrained(str(root / "lang-modules" / "lora" / name))
        params = dict(model.named_parameters())
        total = sum(p.numel() for p in params.values())
        keep = int(total * (0.02 if name == "ranking" else 0.01))
        flat = torch.randperm(total, generator=g)[:keep].sort().values
        deltas, offset = {}, 0
        for pname, p in params.items():
            idx = flat[(flat >= offset) & (flat < offset + p.numel())] - offset
            if idx.numel():
                deltas[pname] = Sparse(idx, torch.randn(idx.numel(), generator=g) * 1e-3)
            offset += p.numel()
        save_sftm(root / "lang-modules" / "sftm" / name, deltas, {"density": keep / total, "synthetic": True})
    return root


def service_latency(args, lang: str) -> None:
    from pipeline.registry import parse_config

    index = f"lucene-{lang}"
    reranker = {"type": "modular_ce", "index": index, "model": args.base, "modules": args.modules}
    config = parse_config({
        "indexes": {index: {"type": "lucene", "language": lang}},
        "pipelines": {
            "with-modules": {"stages": [{"type": "bm25", "index": index, "cutoff": args.depth},
                                        {**reranker, "kind": "lora", "languages": [lang]}]},
            "sftm-modules": {"stages": [{"type": "bm25", "index": index, "cutoff": args.depth},
                                        {**reranker, "kind": "sftm", "languages": [lang]}]},
            "no-modules": {"stages": [{"type": "bm25", "index": index, "cutoff": args.depth},
                                      {**reranker, "kind": "lora", "languages": [], "ranking": None, "fallback": []}]},
            "bm25": {"stages": [{"type": "bm25", "index": index, "cutoff": args.depth}]},
        },
    })
    results = _time_pipelines(config, args, lang, ["bm25", "no-modules", "with-modules", "sftm-modules"], interleave=False,
                              off_hint=" (build the index: python -m training.language_modules.candidates ...)")
    if results is None:
        return
    describe("bm25 alone", results["bm25"])
    describe("bm25 >> base reranker (no modules)", results["no-modules"])
    describe(f"bm25 >> reranker + lora ranking + {lang}", results["with-modules"], results["no-modules"])
    describe(f"bm25 >> reranker + sftm ranking + {lang}", results["sftm-modules"], results["no-modules"])


def ml_latency(args, lang: str) -> None:
    """The configured ml-<lang> pipelines vs the same fusion >> base reranker (no module) vs the fusion alone."""
    import yaml

    from pipeline.registry import parse_config

    raw = yaml.safe_load(args.ml_config.read_text())
    lora, sftm = raw["pipelines"][f"ml-{lang}"], raw["pipelines"][f"ml-sftm-{lang}"]
    fusion, reranker = lora["stages"]
    # no query-embedding cache: otherwise only the first pipeline of each round pays the e5 encoding
    nocache = {**fusion, "retrievers": [{**r, "cache_size": 0} if r["type"] == "dense" else r for r in fusion["retrievers"]]}
    fusion = nocache
    lora = {**lora, "stages": [nocache, reranker]}
    sftm = {**sftm, "stages": [nocache, sftm["stages"][1]]}
    base = {**reranker, "languages": [], "ranking": None, "fallback": []}
    pipelines = {"fusion": {"stages": [fusion]}, "base": {"stages": [fusion, base]}, f"ml-{lang}": lora,
                 f"ml-sftm-{lang}": sftm}
    config = parse_config({"indexes": raw["indexes"], "pipelines": pipelines})
    print(f"\n# 5. service latency, POST /search, {args.ml_config} pipelines, {args.requests} held-out questions, lang={lang}")
    results = _time_pipelines(config, args, lang, list(pipelines), interleave=True)
    if results is None:
        return
    describe("fusion (BM25 + e5) alone", results["fusion"])
    describe("fusion >> base reranker (no module)", results["base"])
    describe(f"ml-{lang} (lora ranking + {lang})", results[f"ml-{lang}"], results["base"])
    describe(f"ml-sftm-{lang} (sftm ranking + {lang})", results[f"ml-sftm-{lang}"], results["base"])


def _time_pipelines(config, args, lang: str, names: list[str], interleave: bool, off_hint: str = "") -> dict | None:
    """ms per POST /search of each named pipeline on ``args.requests`` held-out questions, through the
    real app (one warm-up request each); None (and a message) when a pipeline is off."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.engine import Engine
    from service.settings import Settings
    from training.language_modules.xquad import load_language, question_split

    collection = f"xquad-r-{lang}"
    engine = Engine(config, args.index_root, args.models_dir, [collection])
    off = engine.collection(collection).off
    if off:
        print(f"pipelines off: {off}{off_hint}")
        return None
    data = load_language(args.data, lang)
    _, heldout = question_split(data)
    questions = [data.questions[q] for q in heldout[: args.requests]]
    results: dict[str, list[float]] = {name: [] for name in names}
    with TestClient(create_app(Settings(collections=[collection], cache_ttl_s=0), engine=engine)) as client:
        def post(pipeline: str, q: str) -> None:
            client.post("/search", json={"query": q, "pipeline": pipeline, "k": 10, "lang": lang}).raise_for_status()

        if interleave:  # so that load changes hit every pipeline alike
            for name in names:
                post(name, questions[0])  # warm-up
            for q in questions:
                for name in names:
                    results[name].extend(timed(lambda p=name, q=q: post(p, q), 1))
        else:
            for name in names:
                post(name, questions[0])  # warm-up
                results[name] = [timed(lambda p=name, q=q: post(p, q), 1)[0] for q in questions]
    return results


if __name__ == "__main__":
    sys.exit(main())
