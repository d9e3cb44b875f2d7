"""Training cards: what a run trained on, the command that reproduces it, the commit, the metrics."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from pipeline.core.settings_paths import REPO

CARD_JSON = "card.json"
CARD_MD = "MODEL_CARD.md"


def code_commit() -> str:
    """``$NEURAL_SEARCH_COMMIT`` (set where the tree has no .git, e.g. the GPU box), else ``git rev-parse HEAD``."""
    if os.environ.get("NEURAL_SEARCH_COMMIT"):
        return os.environ["NEURAL_SEARCH_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def canonical_argv(args: argparse.Namespace) -> list[str]:
    """The flags of a parsed command that differ from their defaults (plus ``--seed``), in parser order.

    Needs the parser stored by :func:`remember_parser`; used when the job runs in-process
    (``training.__main__.main(argv)``) and ``sys.argv`` is not its command line.
    """
    parser: argparse.ArgumentParser = args._parser
    out: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "_parser"):
            continue
        value = getattr(args, action.dest, None)
        if value is None or (value == action.default and action.dest != "seed"):
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._AppendAction):
            for item in value:
                out += [flag, str(item)]
        elif isinstance(value, list):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def remember_parser(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(_parser=parser)


def command_line(job: str, argv: Sequence[str]) -> str:
    return "python -m training " + " ".join(shlex.quote(a) for a in [job, *argv])


def reproducible_argv(argv: Sequence[str], steps: int, stopped_by: str) -> list[str]:
    """``argv`` with ``--max-steps`` fixed to the steps done when a time budget stopped the run."""
    argv = list(argv)
    if stopped_by != "time_budget":
        return argv
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--time-budget", "--max-steps"):
            skip = True
            continue
        if a.startswith(("--time-budget=", "--max-steps=")):
            continue
        out.append(a)
    return [*out, "--max-steps", str(steps)]


def write_card(folder: Path, *, job: str, argv: Sequence[str], title: str, data: dict[str, Any],
               training: dict[str, Any], metrics: dict[str, Any], weights_sha256: str | None = None,
               notes: str = "") -> dict[str, Any]:
    """Write ``card.json`` and ``MODEL_CARD.md`` into ``folder`` and return the card."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stats = training.get("stats", {})
    card = {
        "title": title,
        "command": command_line(job, argv),
        "reproduce": command_line(job, reproducible_argv(argv, stats.get("steps", 0), stats.get("stopped_by", ""))),
        "commit": code_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": data,
        "training": training,
        "metrics": metrics,
        "weights_sha256": weights_sha256,
        "notes": notes,
    }
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2, default=str))
    lines = [f"# {title}", "", notes, "", "## Reproduce", "", "```bash", card["reproduce"], "```", "",
             f"Code commit: `{card['commit']}`. Weights sha256: `{weights_sha256}`.", "", "## Data", ""]
    lines += [f"- **{k}**: {v}" for k, v in data.items()]
    lines += ["", "## Training", ""] + [f"- **{k}**: {v}" for k, v in training.items()]
    lines += ["", "## Metrics (exact search, trec_eval definitions)", "", "| eval set | nDCG@10 | R@100 |", "|---|---|---|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {m.get('nDCG@10', float('nan')):.4f} | {m.get('R@100', float('nan')):.4f} |")
    (folder / CARD_MD).write_text("\n".join(lines) + "\n")
    return card
