"""Per-query blend policies: alpha_q = hi if a feature of the reranker's scores is >= t, else lo.

(feature, t, lo, hi) are chosen on the mean of SciFact dev, XQuAD-R en dev and the manual pages (a held-out domain);
SciFact test and Cranfield are read after. Reads the dumps of ``train --dump-scores``. From the repository root:

    python results/2026-12-04-ce-generalize/policy_features.py DUMPS_FOLDER VARIANT
"""

import itertools
import json
import statistics as st
import sys
from pathlib import Path

sys.path.insert(0, ".")

from training.cross_encoder.blend_study import blend_run, split_by_dataset  # noqa: E402
from training.cross_encoder.ranking_metrics import ndcg_at_k  # noqa: E402

DEV = ("scifact-dev", "xquad-dev", "manpages")
FEATURES = ("max", "margin", "spread10", "o10")


def features(rows: list) -> dict[str, float]:
    ce, first = [r[2] for r in rows], [r[1] for r in rows]
    top = sorted(ce, reverse=True)
    by_ce = sorted(range(len(rows)), key=lambda i: -ce[i])[:10]
    by_first = sorted(range(len(rows)), key=lambda i: -first[i])[:10]
    return {"max": top[0], "margin": top[0] - top[1], "spread10": top[0] - top[min(9, len(top) - 1)],
            "o10": len(set(by_ce) & set(by_first)) / 10}


def main(folder: Path, variant: str) -> None:
    def load(tag: str) -> dict:
        return json.loads((folder / f"{variant}--{tag}.json").read_text())

    dev = split_by_dataset(load("dev"))
    sets = {"scifact-dev": dev["scifact"], "xquad-dev": dev["xquad-r-en"], "manpages": load("manpages-titles"),
            "scifact-test": load("test"), "cranfield": load("cranfield")}
    feats = {n: {q: features(r) for q, r in d["stages"]["zhybrid"].items() if r} for n, d in sets.items()}
    by_rows = {id(r): feats[n][q] for n, d in sets.items() for q, r in d["stages"]["zhybrid"].items() if r}
    for f in FEATURES:
        print(f, " ".join(f"{n}:{st.mean(v[f] for v in feats[n].values()):.3f}" for n in sets))

    def score(name: str, policy) -> float:
        return ndcg_at_k(sets[name]["qrels"], blend_run(sets[name]["stages"]["zhybrid"], policy))

    print("constant 0.7:", {n: round(score(n, 0.7), 4) for n in sets})
    results = []
    for f in FEATURES:
        values = sorted(v[f] for n in DEV for v in feats[n].values())
        for p, lo, hi in itertools.product((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), (0.3, 0.5, 0.7),
                                           (0.7, 0.8, 0.9, 1.0)):
            if lo >= hi:
                continue
            t = values[int(len(values) * p)]

            def policy(rows, t=t, lo=lo, hi=hi, f=f):
                return hi if by_rows[id(rows)][f] >= t else lo
            results.append((st.mean(score(n, policy) for n in DEV), f, t, lo, hi, policy))
    results.sort(key=lambda r: -r[0])
    print("constant 0.7 dev mean:", round(st.mean(score(n, 0.7) for n in DEV), 4))
    for dev_mean, f, t, lo, hi, policy in results[:5]:
        print(f"dev {dev_mean:.4f} {f} >= {t:.3f}: {hi} else {lo};",
              {n: round(score(n, policy), 4) for n in ("scifact-test", "cranfield")})


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
