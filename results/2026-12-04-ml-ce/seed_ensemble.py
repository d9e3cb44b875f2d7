"""Averaging ranking modules trained with different seeds: score ensembles from a job's raw scores (issue 20).

``python results/2026-12-04-ml-ce/seed_ensemble.py BUNDLE RUN_DIR NAME=ml-a1/lora-all ...``

Each ``NAME=DIR/SYSTEM`` reads ``RUN_DIR/DIR/scores.json`` (``training.multilingual.ml_ce``'s raw scores). Prints, per
system and for the mean of the given systems' per-question z-scored scores: the blend weight chosen on the pooled
dev questions (training articles), the pooled dev nDCG@10 there, and the held-out gain over the fusion per language.
Only dev chooses; held-out is printed.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from training.multilingual.ce_data import read_bundle
from training.multilingual.ml_ce import report


def zscored(run: dict) -> dict:
    out = {}
    for q, docs in run.items():
        values = list(docs.values())
        mean, sd = statistics.fmean(values), statistics.pstdev(values) or 1.0
        out[q] = {d: (s - mean) / sd for d, s in docs.items()}
    return out


def mean_runs(runs: list[dict]) -> dict:
    out = {}
    for lang in runs[0]:
        normed = [zscored(r[lang]) for r in runs]
        out[lang] = {q: {d: statistics.fmean(z[q][d] for z in normed) for d in docs} for q, docs in runs[0][lang].items()}
    return out


def main(argv: list[str]) -> int:
    import json

    bundle, root, specs = read_bundle(Path(argv[0])), Path(argv[1]), argv[2:]
    systems = {}
    for spec in specs:
        name, where = spec.split("=")
        folder, system = where.split("/")
        systems[name] = json.loads((root / folder / "scores.json").read_text())[system]
    if len(systems) > 1:
        systems["mean(" + ",".join(systems) + ")"] = {split: mean_runs([s[split] for s in list(systems.values())])
                                                      for split in ("dev", "heldout")}
    langs = list(bundle["languages"])
    print("system\talpha\tdev pooled\t" + "\t".join(f"{x} gain" for x in langs) + "\tmean gain")
    for name, s in systems.items():
        res = report(bundle, s["dev"], s["heldout"], langs)
        gains = [res["languages"][x]["gain"] for x in langs]
        print(f"{name}\t{res['alpha']:.2f}\t{res['dev_pooled'][res['alpha']]:.4f}\t"
              + "\t".join(f"{g:+.4f}" for g in gains) + f"\t{statistics.fmean(gains):+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
