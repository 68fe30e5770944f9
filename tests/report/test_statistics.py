"""Statistics against scipy and statsmodels: permutation tests, bootstrap and score intervals, power."""

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize

from keras_stability.report import statistics
from keras_stability.report.statistics import (
    Comparison,
    bootstrap_interval,
    compare_means,
    compare_rates,
    fewest_seeds_for_significance,
    mean_ci,
    permutation_p_value,
    seeds_for_power,
    smallest_permutation_p,
)

# Bimodal outcomes as the suite sees them: a run trains (≈ 0.93) or sits at chance (≈ 0.10).
TRAINED_OR_NOT = [0.93, 0.94, 0.10, 0.92, 0.11]
BASELINE = [0.10, 0.09, 0.11, 0.10, 0.93]


def mean_difference(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def scipy_exact(a, b):
    return stats.permutation_test(
        (a, b),
        mean_difference,
        permutation_type="independent",
        n_resamples=np.inf,
        alternative="two-sided",
        vectorized=True,
    ).pvalue


def test_mean_ci_matches_scipy():
    values = [0.9, 0.92, 0.91]
    estimate = mean_ci(values)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert estimate.mean == pytest.approx(0.91, rel=1e-12)
    assert estimate.ci == pytest.approx((high - low) / 2, rel=1e-12)
    assert estimate.text() == "0.9100 ± 0.0248 (n=3)"
    assert math.isnan(mean_ci([1.0]).ci) and mean_ci([]).n == 0


@pytest.mark.parametrize(
    "a, b",
    [
        (TRAINED_OR_NOT, BASELINE),
        ([0.95, 0.96, 0.94, 0.0], [0.90, 0.91]),
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),  # no difference: p = 1
        (list(np.linspace(0.1, 0.9, 10)), list(np.linspace(0.0, 0.7, 10))),  # C(20, 10) = 184,756 splits
    ],
)
def test_permutation_test_is_exact_enumeration(a, b):
    assert permutation_p_value(a, b) == pytest.approx(scipy_exact(a, b), rel=1e-12)


def test_smallest_exact_p_value_by_hand():
    # 5 against 5, completely separated: only the observed split and its mirror are as extreme.
    assert permutation_p_value([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / math.comb(10, 5), rel=1e-12)


def test_random_permutations_beyond_the_exact_limit(monkeypatch):
    a, b = list(np.linspace(0.2, 1.0, 8)), list(np.linspace(0.0, 0.6, 8))
    exact = scipy_exact(a, b)
    monkeypatch.setattr(statistics, "EXACT_SPLITS", 100)
    sampled = permutation_p_value(a, b)
    # 20,000 random splits: the binomial standard error of p is ≤ 0.0036.
    assert sampled == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / statistics.RESAMPLES) + 1e-4)
    assert sampled != exact


def test_bootstrap_interval_matches_scipy_percentile_bootstrap():
    a, b = TRAINED_OR_NOT * 2, BASELINE * 2
    low, high = bootstrap_interval(a, b)
    reference = stats.bootstrap(
        (a, b),
        mean_difference,
        method="percentile",
        n_resamples=20_000,
        vectorized=True,
        random_state=np.random.default_rng(1),
    ).confidence_interval
    assert low == pytest.approx(reference.low, abs=0.03) and high == pytest.approx(reference.high, abs=0.03)
    assert bootstrap_interval([0.5, 0.5], [0.25, 0.25]) == (0.25, 0.25)


def test_compare_means_on_bimodal_outcomes():
    comparison = compare_means(TRAINED_OR_NOT, BASELINE)
    assert comparison.difference == pytest.approx(np.mean(TRAINED_OR_NOT) - np.mean(BASELINE), rel=1e-12)
    assert comparison.p_value == pytest.approx(scipy_exact(TRAINED_OR_NOT, BASELINE), rel=1e-12)
    assert comparison.low < comparison.difference < comparison.high
    assert not comparison.significant and comparison.seeds_needed > 5
    assert "seeds per side for 80% power" in comparison.text()
    too_few = compare_means([0.9], [0.1, 0.2])
    assert too_few.difference == pytest.approx(0.75) and math.isnan(too_few.p_value)


@pytest.mark.parametrize("effect", [0.3, 0.8, 1.5, -2.0])
def test_seeds_for_power_match_statsmodels(effect):
    reference = NormalIndPower().solve_power(effect_size=abs(effect), alpha=0.05, power=0.8, ratio=1.0)
    assert seeds_for_power(effect) == max(2, math.ceil(reference - 1e-9))
    assert statistics.normal_power(effect, seeds_for_power(effect)) >= 0.8
    assert seeds_for_power(0.0) is None


def test_compare_rates_is_fisher_with_newcombe_interval():
    comparison = compare_rates(0, 10, 6, 10)
    assert comparison.p_value == pytest.approx(stats.fisher_exact([[0, 10], [6, 4]]).pvalue, rel=1e-12)
    assert comparison.difference == pytest.approx(-0.6) and comparison.significant
    low, high = confint_proportions_2indep(0, 10, 6, 10, method="newcomb", compare="diff")
    assert (comparison.low, comparison.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    inconclusive = compare_rates(7, 10, 10, 10)
    h = proportion_effectsize(0.7, 1.0)
    reference = NormalIndPower().solve_power(effect_size=abs(h), alpha=0.05, power=0.8, ratio=1.0)
    assert not inconclusive.significant and inconclusive.seeds_needed == math.ceil(reference)
    assert compare_rates(3, 10, 3, 10).seeds_needed is None


def test_a_design_that_cannot_reach_significance_says_so():
    # 2 vs 2 seeds: the exact permutation test's two most extreme splits of C(4, 2) = 6 give p = 1/3.
    assert smallest_permutation_p(2, 2) == pytest.approx(1 / 3)
    assert permutation_p_value([1.0, 1.1], [0.0, 0.1]) == pytest.approx(1 / 3)
    comparison = compare_means([1.0, 1.1], [0.0, 0.1])
    assert not comparison.can_reach_significance
    assert "cannot reach p < 0.05: its smallest possible p is 0.333" in comparison.text()
    # The seeds it asks for can reach α: 4 per side (2 / C(8, 4) = 0.029), not the 2 power alone gives.
    assert fewest_seeds_for_significance() == 4 and comparison.seeds_needed >= 4
    assert compare_means([1.0, 1.1, 1.2, 1.3], [0.0, 0.1, 0.2, 0.3]).p_value == pytest.approx(2 / 70)


def test_an_interval_that_disagrees_with_the_test_is_explained():
    a, b = [0.50, 0.52, 0.47, 0.44, 0.49], [0.40, 0.43, 0.45, 0.48, 0.46]
    comparison = compare_means(a, b)
    # The percentile bootstrap excludes 0 while the exact test over C(10, 5) splits does not reject.
    assert comparison.low > 0 and comparison.can_reach_significance and not comparison.significant
    assert "the test decides" in comparison.caveat() and "the test decides" in comparison.text()


def test_fisher_floor_is_the_most_extreme_table():
    assert compare_rates(2, 2, 0, 2).smallest_p == pytest.approx(stats.fisher_exact([[2, 0], [0, 2]]).pvalue)
    assert not compare_rates(2, 2, 0, 2).can_reach_significance and compare_rates(11, 11, 0, 11).can_reach_significance


def test_a_censored_ratio_is_a_bound_not_an_interval_to_explain():
    # "≥ ×507" with p = 1 (the bounding group diverged in most seeds at its grid's end): no caveat.
    bound = Comparison(507.6, 507.6, math.inf, 1.0, "censored", measure="ratio")
    assert bound.caveat() == ""
