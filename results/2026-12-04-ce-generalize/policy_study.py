import json, itertools, sys
from training.cross_encoder.blend_study import split_by_dataset, blend_run
from training.cross_encoder.ranking_metrics import ndcg_at_k
def overlap(rows, k=10):
    a = {r[0] for r in sorted(rows, key=lambda r: -r[1])[:k]}; b = {r[0] for r in sorted(rows, key=lambda r: -r[2])[:k]}
    return len(a & b) / k
def ev(dump, stage, pol):
    return ndcg_at_k(dump["qrels"], blend_run(dump["stages"][stage], pol))
V = "/work/gpu5/scores/listwise+curriculum+dense-negs+teacher--"
dev = split_by_dataset(json.load(open(V + "dev.json")))
devs = [dev["scifact"], dev["xquad-r-en"]]
test = json.load(open(V + "test.json")); cran = json.load(open(V + "cranfield.json"))
base = json.load(open("/work/gpu5/scores-adapt/base--cranfield.json"))
stage = sys.argv[1] if len(sys.argv) > 1 else "zhybrid"
grid = [i / 10 for i in range(11)]
best = None
for lo, hi, t in itertools.product(grid, grid, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]):
    if lo > hi: continue
    pol = lambda rows, lo=lo, hi=hi, t=t: hi if overlap(rows) >= t else lo
    s = sum(ev(d, stage, pol) for d in devs) / len(devs)
    if best is None or s > best[0]: best = (s, lo, hi, t)
s, lo, hi, t = best
pol = lambda rows: hi if overlap(rows) >= t else lo
print("chosen on dev", best)
for name, d in [("test", test), ("cranfield", cran), ("base-cranfield", base)]:
    print(name, "policy", round(ev(d, stage, pol), 4), "const0.5", round(ev(d, stage, 0.5), 4), "const0.8", round(ev(d, stage, 0.8), 4), "first", round(ev(d, stage, 0.0), 4))
print("mean overlap", {n: round(sum(overlap(r) for r in d["stages"][stage].values()) / len(d["stages"][stage]), 3) for n, d in [("sfdev", devs[0]), ("xqdev", devs[1]), ("test", test), ("cran", cran), ("basecran", base)]})
