"""``python -m training.dense.suite``: every run of issue 5 in one process, one results table.

Each step is exactly one ``python -m training dense|moe|mamba`` command (its card records
it), run in-process to pay the import and start-up cost once on the GPU machine::

    python -m training.dense.suite --data-dir ../shared/data --base minilm --work checkpoints/dense \\
        --out reports/dense

Writes ``results.json`` (after every step, so a run cut short keeps what it finished), the
cards and the TREC runs under ``--out``. ``--only`` runs a subset; ``--budget-scale`` scales the
per-step time budgets (safety stops; the default plan finishes by epochs).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import traceback
from importlib import import_module
from pathlib import Path

JOBS = {"dense": "training.dense.cli", "moe": "training.dense.moe_cli", "mamba": "training.dense.mamba_cli"}
EVAL_BOTH = ["--eval", "scifact:test", "--eval", "cranfield:test"]
PRETRAIN = ["--corpus", "scifact", "--corpus", "cranfield", "--pairs-per-doc", "2", "--epochs", "1",
            "--loss", "cached-mnrl", "--batch-size", "256", "--mini-batch-size", "64", "--lr", "5e-5"]
SUPERVISED = ["--task", "supervised", "--train", "scifact", "--epochs", "4", "--batch-size", "32"]

# name -> (job, argv template, time budget in seconds); {base} and {work} are filled in.
# The budgets are safety stops sized from the H200 run of 2026-11-28 (about 365 ICT pairs/s with
# cached MNRL, 0.2 s per Mamba distillation step): the whole plan needs about 10 minutes of GPU.
PLAN: dict[str, tuple[str, list[str], float]] = {
    "zeroshot": ("dense", ["--task", "none", "--init", "{base}", *EVAL_BOTH, "--eval", "xquad-r/en:heldout",
                           "--eval", "scifact:dev"], 0),
    "ict": ("dense", ["--task", "ict", "--init", "{base}", *PRETRAIN, "--out", "{work}/ict", *EVAL_BOTH], 40),
    "bfs": ("dense", ["--task", "bfs", "--init", "{base}", *PRETRAIN, "--out", "{work}/bfs", *EVAL_BOTH], 40),
    "ict+bfs": ("dense", ["--task", "ict+bfs", "--init", "{base}", *PRETRAIN, "--out", "{work}/ict+bfs", *EVAL_BOTH],
                60),
    "ict+bfs>sup": ("dense", [*SUPERVISED, "--init", "{work}/ict+bfs", "--out", "{work}/ict+bfs-sup", *EVAL_BOTH,
                              "--eval", "scifact:dev"], 30),
    "sup": ("dense", [*SUPERVISED, "--init", "{base}", "--out", "{work}/sup", *EVAL_BOTH, "--eval", "scifact:dev"], 30),
    "moe": ("moe", ["--mode", "moe", "--init", "{base}", "--epochs", "3", "--out", "{work}/moe"], 60),
    "separate": ("moe", ["--mode", "separate", "--init", "{base}", "--epochs", "3", "--out", "{work}/separate"], 20),
    "mamba-distill": ("mamba", ["--stage", "distill", "--teacher", "{base}", "--corpus", "scifact", "--corpus",
                                "cranfield", "--corpus", "xquad-r/en", "--epochs", "1", "--batch-size", "64",
                                "--out", "{work}/mamba-distill", *EVAL_BOTH], 120),
    "mamba-ft": ("mamba", ["--stage", "finetune", "--init", "{work}/mamba-distill", "--train", "scifact",
                           "--epochs", "4", "--lr", "2e-4", "--out", "{work}/mamba-ft", *EVAL_BOTH], 30),
}


def step_argv(name: str, base: str, work: Path, data_dir: Path | None, runs: Path, budget_scale: float) -> list[str]:
    _, template, budget = PLAN[name]
    argv = [a.format(base=base, work=work) for a in template]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    argv += ["--runs-dir", str(runs / name.replace(">", "-"))]
    if budget and budget_scale > 0:
        argv += ["--time-budget", str(round(budget * budget_scale, 1))]
    return argv


def run_step(name: str, argv: list[str]) -> dict:
    job = PLAN[name][0]
    module = import_module(JOBS[job])
    parser = argparse.ArgumentParser(prog=f"python -m training {job}")
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    code = module.run(args, argv)
    return {"job": job, "argv": argv, "exit": code, "seconds": round(time.perf_counter() - start, 1),
            **getattr(args, "result", {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.dense.suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--base", default="minilm", help="'minilm' or a MiniLM sentence-transformers folder")
    parser.add_argument("--work", type=Path, required=True, help="where the trained models go")
    parser.add_argument("--out", type=Path, required=True, help="results.json, cards and runs")
    parser.add_argument("--only", nargs="*", default=None, choices=list(PLAN))
    parser.add_argument("--budget-scale", type=float, default=1.0, help="0 disables the time budgets")
    parser.add_argument("--mamba-size", type=int, nargs=2, default=[384, 6], metavar=("HIDDEN", "LAYERS"),
                        help="Mamba width (= the base model's dimension) and depth")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for name in args.only or list(PLAN):
        step = step_argv(name, args.base, args.work, args.data_dir, args.out / "runs", args.budget_scale)
        if name == "mamba-distill":
            step += ["--hidden-size", str(args.mamba_size[0]), "--layers", str(args.mamba_size[1])]
        logging.info("=== %s: python -m training %s %s", name, PLAN[name][0], " ".join(step))
        try:
            results[name] = run_step(name, step)
        except Exception as exc:  # noqa: BLE001 - one failed step must not lose the others' results
            results[name] = {"error": repr(exc), "traceback": traceback.format_exc()}
            logging.error("step %s failed: %s", name, exc)
        if "--out" in step:
            model_dir = Path(step[step.index("--out") + 1])
            for card in sorted(model_dir.glob("**/card.json")):
                dest = args.out / "cards" / name.replace(">", "-") / card.parent.relative_to(model_dir)
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(card, dest / "card.json")
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print_table(results)
    return 0 if all("error" not in r and r.get("exit") == 0 for r in results.values()) else 1


def print_table(results: dict) -> None:
    print("step\teval set\tnDCG@10\tR@100\tsteps\ttrain_s")
    for name, r in results.items():
        stats = r.get("stats") or {}
        runs = [stats] if "steps" in stats else [v for v in stats.values() if isinstance(v, dict)]
        steps = "+".join(str(s.get("steps")) for s in runs) or "-"
        secs = "+".join(str(s.get("seconds")) for s in runs) or "-"
        for es, m in (r.get("metrics") or {}).items():
            print(f"{name}\t{es}\t{m['nDCG@10']:.4f}\t{m['R@100']:.4f}\t{steps}\t{secs}")
        if "error" in r:
            print(f"{name}\tERROR {r['error']}")


if __name__ == "__main__":
    sys.exit(main())
