"""Regression matrices (after Pyserini's ``2cr/*.yaml``): per dataset and pipeline, the
command and the expected scores, and a checker that compares fresh runs within a tolerance.

A matrix file (``eval/regressions/<dataset>.yaml``)::

    dataset: ../shared/data/scifact        # relative to the repository root
    split: test
    tolerance: 0.002                        # default absolute tolerance
    conditions:
      bm25:
        command: python -m eval --dataset ../shared/data/scifact --split test --pipeline bm25
        scores: {nDCG@10: 0.6789, R@100: 0.9253}

``check_matrix(matrix, ...)`` runs every condition fresh (sharing identical stage
prefixes) and returns one :class:`ConditionCheck` per condition.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eval.arguments import eval_parser
from eval.experiment import Experiment
from eval.metrics import DISPLAY
from pipeline.core.config import ServiceConfig
from pipeline.core.errors import ConfigError
from pipeline.core.settings_paths import default_data_dir

REGRESSIONS_DIR = Path(__file__).parent / "regressions"
REPO = Path(__file__).resolve().parent.parent
KNOWN_MEASURES = set(DISPLAY.values())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    command: str
    scores: dict[str, float] = Field(default_factory=dict)
    tolerance: float | None = Field(default=None, ge=0, le=0.5)
    note: str = ""
    pending: str | None = None
    """Why there are no expected numbers yet (e.g. not measurable on the CPU); then ``scores`` is empty."""

    @property
    def max_queries(self) -> int | None:
        """The command's ``--max-queries`` (a fixed subset for CPU-heavy pipelines), else None."""
        argv = shlex.split(self.command)
        for i, arg in enumerate(argv):
            if arg == "--max-queries" and i + 1 < len(argv):
                return int(argv[i + 1])
            if arg.startswith("--max-queries="):
                return int(arg.split("=", 1)[1])
        return None

    @model_validator(mode="after")
    def _scores_or_pending(self) -> "Condition":
        if bool(self.scores) == bool(self.pending):
            raise ValueError("give either expected 'scores' or a 'pending' reason, not both or neither")
        return self


class Matrix(_Strict):
    dataset: str
    split: str = "test"
    tolerance: float = Field(default=0.002, ge=0, le=0.5)
    conditions: dict[str, Condition] = Field(min_length=1)

    def dataset_path(self, repo: Path = REPO) -> Path:
        """The dataset folder: relative to the repository, else under ``$SEARCH_DATA_DIR``."""
        path = Path(self.dataset)
        path = path if path.is_absolute() else (repo / path).resolve()
        parts = Path(self.dataset).parts
        if not path.exists() and parts[:3] == ("..", "shared", "data"):
            path = default_data_dir().joinpath(*parts[3:])
        return path


@dataclass(frozen=True)
class Deviation:
    measure: str
    expected: float
    measured: float | None
    tolerance: float

    def __str__(self) -> str:
        got = "missing" if self.measured is None else f"{self.measured:.4f}"
        return f"{self.measure}: expected {self.expected:.4f} ± {self.tolerance}, got {got}"


@dataclass
class ConditionCheck:
    pipeline: str
    measured: dict[str, float] = field(default_factory=dict)
    deviations: list[Deviation] = field(default_factory=list)
    error: str | None = None
    pending: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.pending is None and not self.deviations


def load_matrix(path: Path) -> Matrix:
    """Read and validate a matrix file; ConfigError names the bad field or command."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
        matrix = Matrix(**(raw or {}))
    except FileNotFoundError as exc:
        raise ConfigError(f"regression matrix not found: {path}") from exc
    except (yaml.YAMLError, TypeError) as exc:
        raise ConfigError(f"{path}: not a regression matrix: {exc}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
    for name, cond in matrix.conditions.items():
        unknown = set(cond.scores) - KNOWN_MEASURES
        if unknown:
            raise ConfigError(f"{path}: conditions.{name}.scores: unknown measures {sorted(unknown)} (known: {sorted(KNOWN_MEASURES)})")
        check_command(cond.command, matrix, name, path)
    return matrix


def check_command(command: str, matrix: Matrix, pipeline: str, where: Path | str = "matrix") -> None:
    """The command must be the eval job (as the CLI parses it) on this matrix's dataset, split and pipeline."""

    argv = shlex.split(command)
    if argv[:3] != ["python", "-m", "eval"]:
        raise ConfigError(f"{where}: conditions.{pipeline}.command must start with 'python -m eval'")
    try:
        args = eval_parser().parse_args(argv[3:])
    except SystemExit as exc:
        raise ConfigError(f"{where}: conditions.{pipeline}.command does not parse: {command!r}") from exc
    got = {"--dataset": str(args.dataset), "--split": args.split, "--pipeline": args.pipeline}
    wanted = {"--dataset": str(Path(matrix.dataset)), "--split": matrix.split, "--pipeline": [pipeline]}
    for flag, value in wanted.items():
        if got[flag] != value:
            raise ConfigError(f"{where}: conditions.{pipeline}.command: {flag} should be {value!r}, got {got[flag]!r}")


def compare_scores(expected: dict[str, float], measured: dict[str, float], tolerance: float) -> list[Deviation]:
    """Every expected measure outside ``expected ± tolerance`` (or missing) is a deviation."""
    out = []
    for measure, value in expected.items():
        got = measured.get(measure)
        if got is None or abs(got - value) > tolerance + 1e-12:
            out.append(Deviation(measure, value, got, tolerance))
    return out


def check_matrix(
    matrix: Matrix,
    config: ServiceConfig,
    index_root: Path,
    models_dir: Path,
    pipelines: Iterable[str] | None = None,
    repo: Path = REPO,
) -> list[ConditionCheck]:
    """Run the matrix's conditions fresh and compare each with its expected scores."""
    names = list(pipelines) if pipelines is not None else list(matrix.conditions)
    unknown = [n for n in names if n not in matrix.conditions]
    if unknown:
        raise ConfigError(f"pipelines {unknown} have no condition in the matrix for {matrix.dataset}")
    measured = [n for n in names if not matrix.conditions[n].pending]
    by_subset: dict[int | None, list[str]] = {}
    for name in measured:  # conditions on the same query subset share one experiment (and its prefixes)
        by_subset.setdefault(matrix.conditions[name].max_queries, []).append(name)
    systems, skipped = {}, {}
    for max_queries, group in by_subset.items():
        exp = Experiment(matrix.dataset_path(repo), matrix.split, config, index_root, models_dir, max_queries=max_queries)
        outcome = exp.run_all(group, depths=None)
        systems.update(outcome.systems)
        skipped.update(outcome.skipped)
    checks = []
    for name in names:
        cond = matrix.conditions[name]
        if cond.pending:
            checks.append(ConditionCheck(name, pending=cond.pending))
            continue
        tol = cond.tolerance if cond.tolerance is not None else matrix.tolerance
        if name in skipped:
            checks.append(ConditionCheck(name, error=skipped[name]))
            continue
        measured = systems[name].metrics
        checks.append(ConditionCheck(name, measured, compare_scores(cond.scores, measured, tol)))
    return checks


def matrix_files(folder: Path = REGRESSIONS_DIR) -> list[Path]:
    return sorted(Path(folder).glob("*.yaml"))
