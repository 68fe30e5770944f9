"""The stability boundary: Firth's fit against maximum likelihood, its profile against brute force, a
known critical LR recovered, ratios, censored grids and non-monotone cells."""

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from keras_stability.config.sweep import file_variant
from keras_stability.report.boundary import (
    Cell,
    boundary,
    boundary_ratio,
    cells_of,
    curve,
    fitted_group,
    nonmonotone_cells,
)
from keras_stability.report.outcomes import LEARNING_RATE, Outcome, group_of, holds, sweep_groups
from keras_stability.report.profile import Group, Pair, firth_logistic, penalised_log_likelihood, signed_root

LEARNING_RATES = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]


def outcome(variant, learning_rate, seed, diverged, max_norm=None):
    stabilizer = None if max_norm is None else {"transforms": [{"name": "clip_by_global_norm", "max_norm": max_norm}]}
    config = {
        "dataset": {"name": "mnist_small"},
        "model": {"name": "deep_mlp"},
        "training": {"epochs": 5},
        "optimizer": {"name": "sgd", "learning_rate": learning_rate},
        "stabilizer": stabilizer,
    }
    return Outcome(variant, seed, config, diverged, not diverged, 0.9, 0.1 if diverged else 0.9, None)


def synthetic_group(critical, slope, seeds, rng, variant="sgd", max_norm=None):
    """Runs that diverge with probability σ(slope · (log10 LR − log10 critical))."""
    outcomes = []
    for learning_rate in LEARNING_RATES:
        p = 1 / (1 + math.exp(-slope * (math.log10(learning_rate) - math.log10(critical))))
        outcomes += [outcome(variant, learning_rate, s, bool(rng.random() < p), max_norm) for s in range(seeds)]
    return outcomes


def test_firth_agrees_with_maximum_likelihood_on_overlapping_data():
    x = np.log10(LEARNING_RATES)
    runs, diverged = [40] * 7, [1, 3, 8, 15, 26, 35, 39]
    intercept, slope = firth_logistic(x, diverged, runs)
    rows = np.repeat(x, runs)
    outcomes = np.concatenate([[1] * k + [0] * (n - k) for k, n in zip(diverged, runs)])
    mle = sm.Logit(outcomes, sm.add_constant(rows)).fit(disp=0).params
    # Firth's bias correction is O(1/n): with 280 runs it moves the estimates by a few percent.
    assert intercept == pytest.approx(mle[0], rel=0.06) and slope == pytest.approx(mle[1], rel=0.06)
    assert abs(slope) < abs(mle[1])  # the penalty shrinks the slope towards 0


def test_known_critical_learning_rate_is_recovered_within_its_interval():
    rng = np.random.default_rng(7)
    (group,) = sweep_groups(synthetic_group(critical=0.15, slope=4.0, seeds=20, rng=rng), LEARNING_RATE)
    result = boundary(group)
    assert result.low < 0.15 < result.high
    assert result.critical_lr == pytest.approx(0.15, rel=0.35)
    assert result.low < result.critical_lr < result.high
    fitted = curve(result, [result.critical_lr])
    assert fitted[0] == pytest.approx(0.5, abs=1e-9)


def test_separated_grid_puts_the_boundary_between_the_last_survivor_and_the_first_divergence():
    # doc003_remedies as committed: 0/10 diverged at 0.01–0.1, 10/10 at 0.2 and 0.5.
    outcomes = [outcome("lr", lr, s, lr >= 0.2) for lr in (0.01, 0.05, 0.1, 0.2, 0.5) for s in range(10)]
    result = boundary(sweep_groups(outcomes, LEARNING_RATE)[0])
    assert 0.1 < result.critical_lr < 0.2
    assert math.isfinite(result.slope) and result.slope > 0
    # The profile keeps each cell's binomial uncertainty: ten seeds a cell place the boundary between
    # the two cells, not on a point (a bootstrap at the observed 0/10 and 10/10 collapsed the interval
    # on the estimate); half of 10 seeds diverging at 0.1 or at 0.2 is what the data rule out.
    assert 0.1 < result.low < result.critical_lr < result.high < 0.2
    assert result.high / result.low > 1.2


def test_off_grid_boundaries_are_said_not_extrapolated():
    none = boundary(
        sweep_groups([outcome("a", lr, s, False) for lr in (0.01, 0.1) for s in range(3)], LEARNING_RATE)[0]
    )
    every = boundary(
        sweep_groups([outcome("a", lr, s, True) for lr in (0.01, 0.1) for s in range(3)], LEARNING_RATE)[0]
    )
    single = boundary(sweep_groups([outcome("a", 0.1, s, True) for s in range(3)], LEARNING_RATE)[0])
    assert (none.critical_lr, none.note) == (None, "no run diverged in 0.01–0.1")
    assert (every.critical_lr, every.note) == (None, "every run diverged in 0.01–0.1")
    assert single.note == "one learning rate: no curve" and single.cells == (Cell(0.1, 3, 3, 0),)


def test_groups_come_from_the_configuration_not_the_names():
    rng = np.random.default_rng(0)
    # One sweep written as one variant per learning rate, plus a clipped variant swept inside one name.
    outcomes = [outcome(f"lr_{lr}", lr, s, lr > 0.15) for lr in (0.05, 0.1, 0.2) for s in range(2)]
    outcomes += synthetic_group(0.5, 4.0, 2, rng, variant="clip", max_norm=1.0)
    plain, clipped = sweep_groups(outcomes, LEARNING_RATE, baseline="lr_0.1")
    assert plain.label == "lr_0.1" and set(plain.variants) == {"lr_0.05", "lr_0.1", "lr_0.2"}
    assert clipped.label == "clip" and len(cells_of(clipped)) == len(LEARNING_RATES)


def test_sweep_cells_group_and_are_found_under_their_file_variant():
    # A `sweep:` names its runs `<variant>/<key=value>`; groups and claims know them by `<variant>`.
    outcomes = [outcome(f"no_clip/learning_rate={lr}", lr, s, lr > 0.15) for lr in (0.05, 0.1, 0.2) for s in range(2)]
    outcomes += [outcome(f"clip/learning_rate={lr}", lr, s, False, 1.0) for lr in (0.05, 0.1, 0.2) for s in range(2)]
    groups = sweep_groups(outcomes, LEARNING_RATE, baseline="no_clip")
    assert [group.label for group in groups] == ["no_clip", "clip"]
    assert group_of(groups, "clip") is groups[1] and group_of(groups, "no_clip") is groups[0]
    assert group_of(groups, "no_clip/learning_rate=0.1") is groups[0] and group_of(groups, "no") is None
    assert holds(("a/x=1",), "a") and not holds(("ab/x=1",), "a") and file_variant("a/x=1,y=2") == "a"


def test_ratio_of_critical_learning_rates():
    rng = np.random.default_rng(3)
    outcomes = synthetic_group(0.1, 5.0, 20, rng) + synthetic_group(0.8, 5.0, 20, rng, variant="clip", max_norm=1.0)
    baseline, clipped = [boundary(g) for g in sweep_groups(outcomes, LEARNING_RATE, baseline="sgd")]
    ratio = boundary_ratio(clipped, baseline)
    assert ratio.difference == pytest.approx(clipped.critical_lr / baseline.critical_lr)
    assert 1 < ratio.low < ratio.difference < ratio.high and ratio.significant
    assert ratio.measure == "ratio" and ratio.text().startswith(f"×{ratio.difference:.4f} [")
    same = boundary_ratio(baseline, baseline)
    assert same.difference == 1.0 and not same.significant


def baseline_beyond(baseline, bound):
    """The baseline side of the intersection-union test: the profile's one-sided p-value that its
    critical LR lies at or above `bound` (signed root of the deviance, standard normal)."""
    return stats.norm.cdf(signed_root(fitted_group(baseline.cells), math.log10(bound)))


def test_a_grid_that_never_diverges_bounds_the_ratio_from_below():
    """Intersection-union: the clipped group's 11 survivors at lr 1 (0.5^11) and the baseline's profile
    p-value for a critical LR at or above lr 1, the larger doubled."""
    rng = np.random.default_rng(4)
    outcomes = synthetic_group(0.1, 5.0, 11, rng) + [
        outcome("clip", lr, s, False, 1.0) for lr in LEARNING_RATES for s in range(11)
    ]
    baseline, clipped = [boundary(g) for g in sweep_groups(outcomes, LEARNING_RATE, baseline="sgd")]
    assert clipped.censored == "above" and clipped.critical_lr is None and baseline.censored is None
    ratio = boundary_ratio(clipped, baseline)
    assert ratio.difference == pytest.approx(1.0 / baseline.critical_lr) and ratio.low == ratio.difference
    assert ratio.high == math.inf and ratio.significant
    beyond = baseline_beyond(baseline, 1.0)
    assert beyond < 0.5**11  # a decade above the baseline's boundary: the binomial side decides
    assert ratio.p_value == pytest.approx(2 * max(0.5**11, beyond))
    # Seen from the baseline's side the same data bound the ratio from above.
    inverse = boundary_ratio(baseline, clipped)
    assert inverse.difference == pytest.approx(baseline.critical_lr) and inverse.high == inverse.difference
    assert inverse.p_value == ratio.p_value
    # Five survivors at the grid's end are weaker evidence than the baseline's fit: 2 × 0.5^5.
    few = [boundary(g) for g in sweep_groups([o for o in outcomes if o.seed < 5], LEARNING_RATE, baseline="sgd")]
    assert boundary_ratio(few[1], few[0]).p_value == pytest.approx(2 * 0.5**5)


def test_censored_the_same_way_or_past_the_other_grid_says_nothing():
    never = [outcome("a", lr, s, False) for lr in (0.01, 0.1) for s in range(5)]
    never += [outcome("b", lr, s, False, 1.0) for lr in (0.01, 0.1) for s in range(5)]
    a, b = [boundary(g) for g in sweep_groups(never, LEARNING_RATE, baseline="a")]
    assert math.isnan(boundary_ratio(b, a).difference)
    # Every run of `b` diverged from 0.01 up, none of `a` up to 0.1: b's critical LR is below a's.
    opposite = [outcome("a", lr, s, False) for lr in (0.01, 0.1) for s in range(5)]
    opposite += [outcome("b", lr, s, True, 1.0) for lr in (0.01, 0.1) for s in range(5)]
    a, b = [boundary(g) for g in sweep_groups(opposite, LEARNING_RATE, baseline="a")]
    ratio = boundary_ratio(b, a)
    assert ratio.difference == pytest.approx(0.01 / 0.1) and ratio.high == ratio.difference and ratio.low == 0
    assert ratio.p_value == pytest.approx(2 * 0.5**5)


def test_a_fit_that_crosses_one_half_past_the_grid_is_bounded_by_the_grid():
    """The e2_doc001_regimes pattern: one divergence of 11 at lr 0.5, none at 1. The fit's crossing
    lies far past the grid, so the group is censored above lr 1, and the intersection-union p-value
    takes the binomial chance of ≤ 0 of 11 divergences at lr 1 under one half (scipy's binom)."""
    rng = np.random.default_rng(4)
    outcomes = synthetic_group(0.1, 5.0, 11, rng)
    outcomes += [outcome("init", lr, s, lr == 0.5 and s == 3, 1.0) for lr in LEARNING_RATES for s in range(11)]
    baseline, init = [boundary(g) for g in sweep_groups(outcomes, LEARNING_RATE, baseline="sgd")]
    assert init.censored == "above" and init.critical_lr is None and init.slope > 0
    assert init.note.startswith("the fit crosses ½ past the grid 0.01–1 (at ")
    ratio = boundary_ratio(init, baseline)
    assert ratio.difference == pytest.approx(1.0 / baseline.critical_lr) and ratio.high == math.inf
    assert ratio.p_value == pytest.approx(2 * max(stats.binom.cdf(0, 11, 0.5), baseline_beyond(baseline, 1.0)))
    # Four of eleven diverged at the grid's end (fit crossing past it): the bound is weaker.
    later = [o for o in outcomes if o.variant == "sgd"]
    later += [
        outcome("init", lr, s, (lr == 1.0 and s < 4) or (lr == 0.5 and s == 0), 1.0)
        for lr in LEARNING_RATES
        for s in range(11)
    ]
    baseline, init = [boundary(g) for g in sweep_groups(later, LEARNING_RATE, baseline="sgd")]
    assert init.censored == "above"
    assert boundary_ratio(init, baseline).p_value == pytest.approx(2 * stats.binom.cdf(4, 11, 0.5))


X = np.log10([0.01, 0.03, 0.1, 0.3, 1.0])
DIVERGED, RUNS = np.array([0, 1, 4, 9, 11]), np.array([11, 11, 11, 11, 11])


def test_penalised_likelihood_is_the_binomial_likelihood_plus_half_log_det_of_fisher_information():
    a, b = 1.5, 3.0
    p = 1 / (1 + np.exp(-(a + b * X)))
    binomial = sum(k * math.log(q) + (n - k) * math.log(1 - q) for k, n, q in zip(DIVERGED, RUNS, p))
    information = np.zeros((2, 2))
    for x, n, q in zip(X, RUNS, p):  # Σ n p (1 − p) [1, x]ᵀ[1, x], written out
        information += n * q * (1 - q) * np.array([[1, x], [x, x * x]])
    expected = binomial + 0.5 * math.log(np.linalg.det(information))
    assert penalised_log_likelihood(a, b, X, DIVERGED, RUNS) == pytest.approx(expected, rel=1e-12)


SLOPES = np.exp(np.linspace(math.log(0.05), math.log(200), 40001))


def brute_profile(theta):
    return max(penalised_log_likelihood(-s * theta, s, X, DIVERGED, RUNS) for s in SLOPES)


def test_profile_equals_a_brute_force_maximum_over_the_slope():
    group = Group(X, DIVERGED, RUNS)
    for theta in (group.critical - 0.5, group.critical, group.critical + 0.3):
        assert group.profile(theta) == pytest.approx(brute_profile(theta), abs=1e-6)
    assert group.deviance(group.critical) == pytest.approx(0.0, abs=1e-8)


def test_pair_p_value_is_the_chi2_tail_of_the_joint_deviance_at_equal_critical_points():
    later = Group(X, np.array([0, 0, 1, 5, 10]), RUNS)
    pair = Pair(later, Group(X, DIVERGED, RUNS))
    thetas = np.linspace(-2.5, 0.5, 3001)  # brute force over the shared critical point
    joint = max(later.profile(t) + Group(X, DIVERGED, RUNS).profile(t) for t in thetas[::30])
    deviance = 2 * (later.best + pair.baseline.best - joint)
    assert pair.deviance(0.0) == pytest.approx(deviance, rel=2e-3)
    assert pair.p_value() == pytest.approx(stats.chi2.sf(pair.deviance(0.0), 1))
    low, high = pair.interval()
    assert low < pair.estimate < high
    assert pair.deviance(low) == pytest.approx(stats.chi2.ppf(0.95, 1), abs=1e-4)


def test_profile_interval_agrees_with_the_delta_method_on_large_overlapping_data():
    runs = np.full(len(X), 400)
    diverged = np.array([8, 60, 190, 330, 390])
    group = Group(X, diverged, runs)
    rows = np.repeat(X, runs)
    labels = np.concatenate([[1] * k + [0] * (n - k) for k, n in zip(diverged, runs)])
    fit = sm.Logit(labels, sm.add_constant(rows)).fit(disp=0)
    (a, b), covariance = fit.params, fit.cov_params()
    gradient = np.array([-1 / b, a / b**2])  # θ = −a/b
    half = 1.96 * math.sqrt(gradient @ covariance @ gradient)
    boundary_ = boundary(
        sweep_groups(
            [outcome("g", 10**x, s, s < k) for x, k, n in zip(X, diverged, runs) for s in range(n)], LEARNING_RATE
        )[0]
    )
    assert math.log10(boundary_.low) == pytest.approx(-a / b - half, abs=0.01)
    assert math.log10(boundary_.high) == pytest.approx(-a / b + half, abs=0.01)
    assert group.critical == pytest.approx(-a / b, abs=0.01)


def test_cells_whose_divergence_falls_with_the_learning_rate_are_named():
    cells = (Cell(0.1, 11, 4), Cell(0.3, 11, 6), Cell(0.5, 11, 4))  # 4/6/4: noise, not a fall
    assert nonmonotone_cells(cells) is None
    falling = (Cell(0.1, 11, 1), Cell(0.3, 11, 9), Cell(1.0, 11, 2))
    assert nonmonotone_cells(falling) == (
        "divergence falls from 9/11 at lr 0.3 to 2/11 at 1 (Fisher p = "
        f"{stats.fisher_exact([[9, 2], [2, 9]], alternative='greater').pvalue:.3g})"
    )
