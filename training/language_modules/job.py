"""Train every module and rerank the held-out candidates in one process (one GPU call).

``python -m training.language_modules.job --data DIR --candidates FILE --out OUT``

Runs ``adapters`` (LoRA ranking + languages), ``sftm`` (ranking + languages) and the
evaluation with the same settings as the separate commands, then packs each family into
``OUT/lang-modules-<kind>.tar`` (small enough to come back from a device machine) and writes
``OUT/rerank.json``. Unpack the tars into ``models/`` and score with
``python -m training.language_modules.evaluate --score --out OUT/rerank.json --candidates FILE --data DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tarfile
import time
from pathlib import Path

from training.language_modules import adapters_cli, evaluate, sftm_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--candidates", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", default="ce-minilm")
    parser.add_argument("--langs", default="en,de,es,ar,zh,ru")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sftm-epochs", type=int, default=2, help="epochs of each of the two SFTM phases")
    parser.add_argument("--batch-questions", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="questions per language for training and evaluation (smoke)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    modules = args.out / "lang-modules"
    timings = {}
    common = ["--data", str(args.data), "--out", str(modules), "--base", args.base, "--langs", args.langs,
              "--batch-questions", str(args.batch_questions), "--limit", str(args.limit)]
    for name, cli, epochs in (("lora", adapters_cli, args.epochs), ("sftm", sftm_cli, args.sftm_epochs)):
        sub = argparse.ArgumentParser()
        cli.add_arguments(sub)
        start = time.perf_counter()
        cli.run(sub.parse_args([*common, "--epochs", str(epochs)]))
        timings[f"train_{name}_s"] = round(time.perf_counter() - start, 1)
        with tarfile.open(args.out / f"lang-modules-{name}.tar", "w") as tar:
            tar.add(modules / name, arcname=f"lang-modules/{name}")
    start = time.perf_counter()
    ev = argparse.Namespace(data=args.data, candidates=args.candidates, modules=modules, base=args.base, base_folder=None,
                            langs=args.langs, first_stages="fusion", kinds="lora,sftm", limit=args.limit, depth=30,
                            max_length=256, batch_size=256, device=None)
    reranked = evaluate.rerank(ev)
    timings["rerank_s"] = round(time.perf_counter() - start, 1)
    (args.out / "rerank.json").write_text(json.dumps({**reranked, "timings": timings}))
    shutil.rmtree(modules)
    logging.getLogger(__name__).info("done: %s", timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
