"""Per-query blend by top-10 agreement, chosen on dev dumps, scored on test dumps (see README.md, section 3).

    python results/2026-12-04-ce-generalize/policy_study.py SCORES_DIR ADAPT_SCORES_DIR [STAGE]
"""

import itertools
import json
import sys
from pathlib import Path

from training.cross_encoder.blend_study import blend_run, split_by_dataset
from training.cross_encoder.ranking_metrics import ndcg_at_k

VARIANT = "listwise+curriculum+dense-negs+teacher--"


def overlap(rows, k=10):
    first = {r[0] for r in sorted(rows, key=lambda r: -r[1])[:k]}
    reranked = {r[0] for r in sorted(rows, key=lambda r: -r[2])[:k]}
    return len(first & reranked) / k


def score(dump, stage, policy):
    return ndcg_at_k(dump["qrels"], blend_run(dump["stages"][stage], policy))


def step_policy(lo, hi, t):
    return lambda rows: hi if overlap(rows) >= t else lo


def main(scores: Path, adapt_scores: Path, stage: str = "zhybrid") -> None:
    dev = split_by_dataset(json.loads((scores / f"{VARIANT}dev.json").read_text()))
    devs = [dev["scifact"], dev["xquad-r-en"]]
    tests = {"test": json.loads((scores / f"{VARIANT}test.json").read_text()),
             "cranfield": json.loads((scores / f"{VARIANT}cranfield.json").read_text()),
             "shipped-cranfield": json.loads((adapt_scores / "base--cranfield.json").read_text())}
    grid = [i / 10 for i in range(11)]
    best = max(((sum(score(d, stage, step_policy(lo, hi, t)) for d in devs) / len(devs), lo, hi, t)
                for lo, hi, t in itertools.product(grid, grid, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)) if lo <= hi))
    print("chosen on dev (dev nDCG@10, lo, hi, t):", best)
    policy = step_policy(*best[1:])
    for name, d in tests.items():
        print(name, "policy", round(score(d, stage, policy), 4), "constant 0.5", round(score(d, stage, 0.5), 4),
              "first stage", round(score(d, stage, 0.0), 4))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4])
