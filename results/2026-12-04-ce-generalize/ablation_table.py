"""Issue 19 ablation table from the blend curves of the runs (no GPU): python results/2026-12-04-ce-generalize/ablation_table.py

Each row: nDCG@10 of the served z-score hybrid then the blend alpha*minmax(reranker) + (1-alpha)*minmax(hybrid).
Columns at the shipped alpha 0.5, the reranker alone (alpha 1), and at the alpha chosen on the manual pages
(a held-out domain never trained on: the dev set for unseen collections; Cranfield and SciFact test only reported).
"""
import json
from pathlib import Path

HERE = Path(__file__).parent
ROWS = [  # (label, file, variant, steps) ; the shipped reranker comes from its own interpolation file
    ("from MiniLM: real + titles + sents + teacher (800 steps)", "blend-session4-call1.json", "titles+sents+teacher", 800),
    ("from MiniLM: real + titles + sents + teacher (3000 steps)", "blend-session4-call2.json", "titles+sents+teacher", 3000),
    ("from shipped: real x2 + titles + sents (800 steps, lr 2e-5)", "blend-session4-call1.json", "ship+all", 800),
    ("from shipped: real x2 + titles + sents + teacher (800 steps, lr 2e-5)", "blend-session4-call1.json", "ship+all+teacher", 800),
    ("from shipped: real x4 + titles + sents + teacher (3000 steps, lr 1e-5)", "blend-session4-call2.json", "ship+all+teacher-r4", 3000),
]
SETS = {"scifact dev": "dev:scifact", "xquad-en dev": "dev:xquad-r-en", "manpages (held-out domain)": "manpages-titles",
        "SciFact test": "test", "Cranfield": "cranfield"}


def shipped_curves() -> dict[str, dict[str, float]]:
    c = json.loads((HERE / "shipped-interpolation-h200.json").read_text())["curves"]
    keys = {"dev:scifact": "scifact|dev|hybrid", "dev:xquad-r-en": "xquad-r-en|dev|hybrid",
            "manpages-titles": "manpages-titles (unseen)|test|hybrid", "test": "scifact|test|hybrid",
            "cranfield": "cranfield (unseen)|test|hybrid"}
    return {k: {f"{float(a):.1f}": v for a, v in c[src].items() if a != "first_stage" and round(float(a) * 10) == float(a) * 10}
            for k, src in keys.items()}


def main() -> None:
    rows = [("shipped models/ce-minilm (real data only)", shipped_curves())]
    for label, file, variant, _ in ROWS:
        table = json.loads((HERE / file).read_text())[variant]
        rows.append((label, {k: table[k]["zhybrid"] for k in SETS.values() if k in table}))
    print("| run | alpha (manpages) | " + " | ".join(f"{s}: hybrid / 0.5 / alone / chosen" for s in SETS) + " |")
    print("|---|---|" + "---|" * len(SETS))
    for label, curves in rows:
        man = curves.get("manpages-titles")
        alpha = max(man, key=man.get) if man else None
        cells = []
        for key in SETS.values():
            c = curves.get(key)
            if not c:
                cells.append("n/a")
                continue
            chosen = f"{c[alpha]:.4f}" if alpha else "n/a"
            cells.append(f"{c['0.0']:.4f} / {c['0.5']:.4f} / {c['1.0']:.4f} / {chosen}")
        print(f"| {label} | {alpha or 'n/a'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
