"""Per-request cost of swapping modules in the served e5 reranker, with and without keeping them applied (issue 20).

``python results/2026-12-04-ml-ce/keep_modules_latency.py [--lang de] [--requests 20] [--pipeline ml-de]``

Builds the pipeline's ``modular_ce`` stage from configs/multilingual.yaml as the service does (real base, real
modules), then scores one XQuAD-R held-out question x its 30 first sentences per call, the way one ``/search``
request does, in three streams measured in the same run: the stage as served (``keep_modules``: a module list stays
applied until another is asked for), the same stage re-applying and restoring its modules on every call (the
behaviour before 2026-12-04), and the kept stage on a stream alternating two languages (its questions and sentences
are the other language's half the time, so its forward passes differ in length too). Prints median ms per call, then
the activation alone (no forward pass): re-applied, the kept list again, a kept list switching language every call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", default="de")
    parser.add_argument("--other", default="en", help="the second language of the alternating stream")
    parser.add_argument("--pipeline", default="ml-de")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "xquad-r")
    args = parser.parse_args(argv)
    import torch

    from pipeline.core.types import Query
    from pipeline.registry import load_config
    from pipeline.scorers.modular import ModularScorer, load_registry
    from pipeline.stages.modular_reranker import ModularCEConfig
    from training.language_modules.xquad import load_language, question_split

    torch.set_num_threads(args.threads)
    raw = load_config(REPO / "configs" / "multilingual.yaml").pipelines[args.pipeline].stages[-1]
    cfg = ModularCEConfig(**raw)
    names = sorted({cfg.ranking, *cfg.languages, *cfg.fallback} - {None})
    registry, tokenizer = load_registry(cfg.model, REPO / "models", cfg.modules, cfg.kind, names)
    modules = {x: [cfg.ranking, x] for x in cfg.languages}
    scorer = ModularScorer(registry, tokenizer, modules, fallback=cfg.fallback, kind=cfg.kind, keep_modules=True)
    data = {x: load_language(args.data, x) for x in (args.lang, args.other)}
    held = {x: question_split(d)[1] for x, d in data.items()}

    def request(lang: str, i: int) -> float:
        d = data[lang]
        qid = held[lang][i % len(held[lang])]
        docs = [d.sentences[s] for s in sorted(d.sentences)[:30]]
        start = time.perf_counter()
        scorer.score(Query(qid, d.questions[qid], lang), docs)
        return (time.perf_counter() - start) * 1000

    rows = {}
    for name, keep, langs in (("served: modules kept, one language", True, [args.lang]),
                              ("modules re-applied per request, one language", False, [args.lang]),
                              (f"served: modules kept, alternating {args.lang}/{args.other}", True, [args.lang, args.other]),
                              ("served: modules kept, one language (again)", True, [args.lang])):
        scorer.keep_modules = keep
        registry.reset()
        request(langs[0], 0)  # warm-up
        rows[name] = [request(langs[i % len(langs)], i) for i in range(1, args.requests + 1)]
    def activation(names, keep):
        start = time.perf_counter()
        with registry.activated(names, keep=keep):
            pass
        return (time.perf_counter() - start) * 1000

    registry.reset()
    swaps = {"swap: apply + restore [ranking, lang] (re-applied)": [activation(modules[args.lang], False) for _ in range(9)]}
    activation(modules[args.lang], True)
    swaps["swap: the kept list asked for again"] = [activation(modules[args.lang], True) for _ in range(9)]
    swaps[f"swap: kept [ranking, {args.lang}] -> [ranking, {args.other}] -> ..."] = [
        activation(modules[(args.other, args.lang)[i % 2]], True) for i in range(9)]
    base = statistics.median(rows["modules re-applied per request, one language"])
    print(f"{args.pipeline} ({cfg.kind}), 1 question x 30 sentences per call, {args.requests} calls, "
          f"{torch.get_num_threads()} threads")
    for name, ms in rows.items():
        med = statistics.median(ms)
        print(f"{name:<52} median {med:8.1f} ms   p90 {sorted(ms)[int(0.9 * len(ms)) - 1]:8.1f} ms   x{base / med:.2f}")
    for name, ms in swaps.items():
        print(f"{name:<52} median {statistics.median(ms):8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
