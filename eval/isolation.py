"""Run an experiment's pipelines in child processes, so that a crash skips pipelines instead
of killing the report.

Native code can kill a process outright (a SIGSEGV in a quantized kernel next to the JVM, an
out-of-memory kill); no ``except`` catches that. Pipelines are grouped by their first stage
(so that group still shares its first-stage results), each group runs in a fresh ``spawn``
child, and a group whose child dies is retried one pipeline per child; a pipeline that still
dies is recorded as skipped with the signal or exit code::

    outcome = run_isolated(Path("../shared/data/scifact"), "test", config, index_root, models_dir,
                           ["bm25", "bm25>>ce", "hybrid", "hybrid>>ce"])
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from eval.experiment import DEFAULT_DEPTHS, DatasetOutcome, Experiment, stage_key
from eval.runner import judged_queries
from pipeline.core.config import ServiceConfig
from pipeline.core.errors import PipelineError
from pipeline.storage.collection import dataset_name

logger = logging.getLogger(__name__)


def first_stage_groups(config: ServiceConfig, names: Sequence[str]) -> list[list[str]]:
    """Pipelines grouped by their first stage's config (cutoff aside), in order of appearance."""
    groups: dict[str, list[str]] = {}
    for name in names:
        try:
            first = {k: v for k, v in config.pipelines[name].stages[0].items() if k != "cutoff"}
            key = stage_key([first], f"pipelines.{name}.stages[0]")
        except (KeyError, PipelineError):
            key = f"unknown:{name}"
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def run_isolated(
    dataset: Path,
    split: str,
    config: ServiceConfig,
    index_root: Path,
    models_dir: Path,
    names: Iterable[str],
    depths: Iterable[int] | None = DEFAULT_DEPTHS,
    exclude: Iterable[str] = (),
    preload: Sequence[str] = (),
    max_queries: int | None = None,
    stage_cache: Path | None = None,
) -> DatasetOutcome:
    """Like ``Experiment(...).run_all(names, depths, exclude)``, one child process per group.

    ``preload``: ``"module:function"`` hooks each child calls first (e.g. to register stage types).
    """
    dataset, names, excluded = Path(dataset), list(names), set(exclude)
    queries, _ = judged_queries(dataset, split, max_queries=max_queries)  # fail early, in the parent, on a bad dataset
    outcome = DatasetOutcome(dataset_name(dataset), split, len(queries))
    job = {"dataset": dataset.resolve(), "split": split, "config": config, "index_root": Path(index_root).resolve(),
           "models_dir": Path(models_dir).resolve(), "depths": list(depths) if depths else None, "preload": list(preload),
           "max_queries": max_queries, "stage_cache": Path(stage_cache).resolve() if stage_cache else None}
    todo = [n for n in names if n not in excluded]
    for group in first_stage_groups(config, todo):
        part, error = _in_child(job, group)
        if error and len(group) > 1:
            logger.warning("pipelines %s crashed together (%s): retrying one per process", group, error)
            for name in group:
                _merge(outcome, *_in_child(job, [name]), [name])
        else:
            _merge(outcome, part, error, group)
    for name in names:
        if name in excluded:
            outcome.skipped[name] = "excluded on the command line (--skip)"
    order = {n: i for i, n in enumerate(names)}
    outcome.systems = dict(sorted(outcome.systems.items(), key=lambda kv: order[kv[0]]))
    outcome.skipped = dict(sorted(outcome.skipped.items(), key=lambda kv: order[kv[0]]))
    return outcome


def _merge(outcome: DatasetOutcome, part: DatasetOutcome | None, error: str | None, names: list[str]) -> None:
    if part is None:
        for name in names:
            outcome.skipped[name] = f"crashed: {error}"
        return
    outcome.systems.update(part.systems)
    outcome.skipped.update(part.skipped)
    outcome.curves.update(part.curves)
    outcome.results.update(part.results)
    pipelines = {**outcome.provenance.get("pipelines", {}), **part.provenance.get("pipelines", {})}
    cached = {**outcome.provenance.get("from_stage_cache", {}), **part.provenance.get("from_stage_cache", {})}
    outcome.provenance = {**part.provenance, "pipelines": pipelines, "from_stage_cache": cached}


def _in_child(job: dict[str, Any], names: list[str]) -> tuple[DatasetOutcome | None, str | None]:
    """Run ``names`` in a spawned child; ``(outcome, None)`` or ``(None, why it died)``."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="eval-child-") as tmp:
        out = Path(tmp) / "outcome.pickle"
        proc = ctx.Process(target=_child_main, args=(job, names, str(out)), name=f"eval-{'+'.join(names)}")
        proc.start()
        proc.join()
        frames = [_problematic_frame(log) for log in Path(tmp).glob("hs_err_pid*.log")]
        if out.is_file():
            payload = pickle.loads(out.read_bytes())
            if isinstance(payload, DatasetOutcome):
                return payload, None
            return None, str(payload)
        code = proc.exitcode
        why = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return None, why + "".join(f" (JVM crash report: {f})" for f in frames if f)


def _problematic_frame(crash_log: Path) -> str | None:
    """The native frame a JVM crash report (hs_err_pid*.log) blames, shortened."""
    lines = crash_log.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("# Problematic frame:"):
            return lines[i + 1].lstrip("# ").strip()[:160]
    return None


def _child_main(job: dict[str, Any], names: list[str], out: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.chdir(Path(out).parent)  # a crashing JVM writes hs_err_pid*.log into the working directory
    try:
        for hook in job["preload"]:
            module, func = hook.split(":")
            getattr(importlib.import_module(module), func)()
        exp = Experiment(job["dataset"], job["split"], job["config"], job["index_root"], job["models_dir"],
                         max_queries=job.get("max_queries"), stage_cache=job.get("stage_cache"))
        payload: Any = exp.run_all(names, depths=job["depths"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which records the pipelines as skipped
        payload = f"{type(exc).__name__}: {exc}"
    tmp = Path(out + ".tmp")
    tmp.write_bytes(pickle.dumps(payload))
    tmp.replace(out)
