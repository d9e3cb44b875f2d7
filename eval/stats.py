"""Paired significance tests, multiple-comparison correction and confidence intervals.

Every function takes per-query values aligned by query id (``{qid: value}``), so
two systems are compared on exactly the same queries::

    p_t = paired_t_test(system, baseline)            # two-sided
    p_r = randomisation_test(system, baseline)       # two-sided, sign flips
    adjusted = holm({"dense": p1, "hybrid": p2})      # Holm-Bonferroni
    low, high = bootstrap_ci(system)                  # 95% percentile bootstrap of the mean
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import product
from typing import Mapping

import numpy as np

EXACT_UP_TO = 16
"""Randomisation tests enumerate all 2^n sign flips up to this many queries (exact p-value)."""


def paired_differences(system: Mapping[str, float], baseline: Mapping[str, float]) -> np.ndarray:
    """``system[q] - baseline[q]`` over the shared query ids; refuses mismatched query sets."""
    if set(system) != set(baseline):
        only = sorted(set(system) ^ set(baseline))
        raise ValueError(f"systems were evaluated on different queries ({len(only)} differ, e.g. {only[:3]})")
    if not system:
        raise ValueError("no queries to compare")
    qids = sorted(system)
    return np.array([system[q] - baseline[q] for q in qids], dtype=np.float64)


def paired_t_test(system: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    """Two-sided p-value of the paired t-test (1.0 when every difference is equal to zero)."""
    diffs = paired_differences(system, baseline)
    n = len(diffs)
    if n < 2:
        return 1.0
    sd = float(diffs.std(ddof=1))
    mean = float(diffs.mean())
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    try:
        from scipy.stats import t as student_t
    except ImportError as exc:  # pragma: no cover - scipy ships with the report extra
        raise ImportError("the paired t-test needs scipy: pip install -e '.[report]'") from exc
    t_stat = mean / (sd / math.sqrt(n))
    return float(min(1.0, 2 * student_t.sf(abs(t_stat), df=n - 1)))


def randomisation_test(
    system: Mapping[str, float], baseline: Mapping[str, float], trials: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value of the paired randomisation (sign-flip permutation) test.

    Exact for up to ``EXACT_UP_TO`` queries; otherwise ``trials`` random flips with
    the ``(hits + 1) / (trials + 1)`` estimate, reproducible through ``seed``.
    """
    diffs = paired_differences(system, baseline)
    observed = abs(diffs.mean())
    if observed == 0.0:
        return 1.0
    tol = 1e-12 * max(1.0, observed)
    if len(diffs) <= EXACT_UP_TO:
        signs = np.array(list(product((1.0, -1.0), repeat=len(diffs))))
        means = np.abs(signs @ diffs) / len(diffs)
        return float(np.mean(means >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, trials, 1000):
        size = min(1000, trials - start)
        signs = rng.choice((-1.0, 1.0), size=(size, len(diffs)))
        hits += int(np.sum(np.abs(signs @ diffs) / len(diffs) >= observed - tol))
    return (hits + 1) / (trials + 1)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control), same keys."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, out = len(order), 0.0, {}
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[key]))
        out[key] = running
    return out


def bootstrap_ci(values: Mapping[str, float], level: float = 0.95, samples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over queries."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    data = np.array([values[q] for q in sorted(values)], dtype=np.float64)
    if len(data) == 0:
        raise ValueError("no values")
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 1000):
        size = min(1000, samples - start)
        idx = rng.integers(0, len(data), size=(size, len(data)))
        means[start : start + size] = data[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass(frozen=True)
class Comparison:
    """One system against the baseline on one measure; p-values Holm-adjusted within the family."""

    system: str
    baseline: str
    measure: str
    delta: float
    t_p: float
    rand_p: float
    t_p_holm: float
    rand_p_holm: float
    wins: int = 0
    ties: int = 0
    losses: int = 0
    """Queries where the system scores higher / the same (within 1e-9) / lower than the baseline."""

    def significant(self, alpha: float = 0.05) -> bool:
        """Both tests reject after correction."""
        return self.t_p_holm < alpha and self.rand_p_holm < alpha

    def mark(self, alpha: float = 0.05) -> str:
        """``▲``/``▼`` when both corrected tests reject (better/worse), ``(▲)`` when only one does, else ``""``."""
        arrow = "▲" if self.delta > 0 else "▼"
        hits = (self.t_p_holm < alpha) + (self.rand_p_holm < alpha)
        return arrow if hits == 2 else f"({arrow})" if hits == 1 else ""

    def to_dict(self) -> dict:
        return asdict(self)


def compare_to_baseline(
    per_query: Mapping[str, Mapping[str, float]], baseline: str, measure: str, trials: int = 10_000, seed: int = 0
) -> list[Comparison]:
    """Compare every system in ``per_query`` (``system -> {qid: value}``) with ``baseline``.

    The family for the Holm correction is the set of systems compared on this measure.
    """
    if baseline not in per_query:
        raise ValueError(f"baseline {baseline!r} is not among the systems {sorted(per_query)}")
    others = [s for s in per_query if s != baseline]
    base = per_query[baseline]
    t_p = {s: paired_t_test(per_query[s], base) for s in others}
    r_p = {s: randomisation_test(per_query[s], base, trials=trials, seed=seed) for s in others}
    t_adj, r_adj = holm(t_p), holm(r_p)
    out = []
    for s in others:
        diffs = paired_differences(per_query[s], base)
        out.append(Comparison(s, baseline, measure, float(diffs.mean()), t_p[s], r_p[s], t_adj[s], r_adj[s],
                              *win_tie_loss(diffs)))
    return out


def win_tie_loss(diffs: np.ndarray, tolerance: float = 1e-9) -> tuple[int, int, int]:
    """Counts of per-query differences above, within and below ``tolerance``.

    >>> win_tie_loss(np.array([0.5, 0.0, -0.25, 1e-12]))
    (1, 2, 1)
    """
    return int((diffs > tolerance).sum()), int((abs(diffs) <= tolerance).sum()), int((diffs < -tolerance).sum())
