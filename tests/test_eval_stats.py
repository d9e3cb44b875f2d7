"""Significance tests, Holm correction and bootstrap CIs against values known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from eval.stats import (
    bootstrap_ci,
    compare_to_baseline,
    holm,
    paired_differences,
    paired_t_test,
    randomisation_test,
)


def as_map(values) -> dict[str, float]:
    return {f"q{i:03d}": float(v) for i, v in enumerate(values)}


def test_t_test_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.random(40), rng.random(40)
    expected = scipy_stats.ttest_rel(a, b).pvalue
    assert paired_t_test(as_map(a), as_map(b)) == pytest.approx(expected, rel=1e-9)


def test_identical_systems_are_never_significant():
    a = as_map([0.1, 0.5, 0.9])
    assert paired_t_test(a, a) == 1.0
    assert randomisation_test(a, a) == 1.0


def test_randomisation_is_exact_for_few_queries():
    # 5 positive differences: only "all +" and "all -" reach the observed |mean|: p = 2 / 32.
    sys_, base = as_map([1, 2, 3, 4, 5]), as_map([0, 0, 0, 0, 0])
    assert randomisation_test(sys_, base) == pytest.approx(2 / 32)


def test_randomisation_detects_a_real_improvement_and_not_noise():
    rng = np.random.default_rng(0)
    base = rng.random(200)
    better = np.clip(base + 0.05 + rng.normal(0, 0.05, 200), 0, 1)
    noise = rng.permutation(base)  # same distribution, no paired improvement
    assert randomisation_test(as_map(better), as_map(base), trials=2000) < 0.01
    assert randomisation_test(as_map(noise), as_map(base), trials=2000) > 0.05


def test_randomisation_is_reproducible_with_seed():
    rng = np.random.default_rng(3)
    a, b = as_map(rng.random(50)), as_map(rng.random(50))
    assert randomisation_test(a, b, trials=500, seed=7) == randomisation_test(a, b, trials=500, seed=7)


def test_holm_known_values():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    # sorted: a 0.01*3=0.03, c 0.03*2=0.06, b max(0.06, 0.04*1)=0.06
    assert adjusted == {"a": pytest.approx(0.03), "c": pytest.approx(0.06), "b": pytest.approx(0.06)}
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_bootstrap_ci_contains_mean_and_narrows_with_more_queries():
    rng = np.random.default_rng(2)
    small, large = rng.random(30), rng.random(3000)
    lo, hi = bootstrap_ci(as_map(small))
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_ci(as_map(large), samples=2000)
    assert (hi2 - lo2) < (hi - lo) / 3
    assert bootstrap_ci(as_map([0.5] * 10)) == (pytest.approx(0.5), pytest.approx(0.5))


def test_mismatched_queries_are_refused():
    with pytest.raises(ValueError, match="different queries"):
        paired_differences({"a": 1.0}, {"b": 1.0})


def test_compare_to_baseline_marks_direction_and_corrects():
    rng = np.random.default_rng(4)
    base = rng.random(300) * 0.8
    per_query = {
        "bm25": as_map(base),
        "better": as_map(base + 0.1),
        "worse": as_map(base - 0.1 + rng.normal(0, 0.01, 300)),
        "same": as_map(base + rng.normal(0, 0.05, 300)),
    }
    comps = {c.system: c for c in compare_to_baseline(per_query, "bm25", "nDCG@10", trials=2000)}
    assert set(comps) == {"better", "worse", "same"}
    assert comps["better"].mark() == "▲" and comps["better"].delta == pytest.approx(0.1)
    assert comps["worse"].mark() == "▼"
    assert comps["same"].mark() == ""
    for c in comps.values():
        assert c.t_p_holm >= c.t_p and c.rand_p_holm >= c.rand_p
    with pytest.raises(ValueError, match="baseline"):
        compare_to_baseline(per_query, "nope", "nDCG@10")


def test_tests_are_calibrated_under_the_null():
    """With no real difference, about 5% of comparisons reject at 0.05 (not 0%, not 20%)."""
    rng = np.random.default_rng(5)
    t_rejects = r_rejects = 0
    runs = 300
    for i in range(runs):
        base = rng.random(50)
        other = base + rng.normal(0, 0.1, 50)  # paired noise, zero mean
        t_rejects += paired_t_test(as_map(other), as_map(base)) < 0.05
        r_rejects += randomisation_test(as_map(other), as_map(base), trials=400, seed=i) < 0.05
    assert 0.02 <= t_rejects / runs <= 0.09
    assert 0.02 <= r_rejects / runs <= 0.09
