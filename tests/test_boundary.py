"""The stability boundary: Firth's fit against maximum likelihood, a known critical LR recovered, ratios."""

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from keras_stability.experiments.sweep import file_variant
from keras_stability.report.boundary import Cell, boundary, boundary_ratio, cells_of, curve, firth_logistic
from keras_stability.report.outcomes import LEARNING_RATE, Outcome, group_of, holds, sweep_groups

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
    # Every bootstrap replicate is the same separated table: the interval collapses on the estimate.
    assert result.low == pytest.approx(result.critical_lr) and result.high == pytest.approx(result.critical_lr)


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
    assert single.note == "one learning rate: no curve" and single.cells == (Cell(0.1, 3, 3),)


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


def test_a_grid_that_never_diverges_bounds_the_ratio_from_below():
    """Intersection-union: the clipped group's 11 survivors at lr 1 (0.5^11) and the baseline's
    bootstrap share at or above lr 1 (none of 1,000 replicates: 1/1,001), the larger doubled."""
    rng = np.random.default_rng(4)
    outcomes = synthetic_group(0.1, 5.0, 11, rng) + [
        outcome("clip", lr, s, False, 1.0) for lr in LEARNING_RATES for s in range(11)
    ]
    baseline, clipped = [boundary(g) for g in sweep_groups(outcomes, LEARNING_RATE, baseline="sgd")]
    assert clipped.censored == "above" and clipped.critical_lr is None and baseline.censored is None
    ratio = boundary_ratio(clipped, baseline)
    assert ratio.difference == pytest.approx(1.0 / baseline.critical_lr) and ratio.low == ratio.difference
    assert ratio.high == math.inf and ratio.significant
    assert ratio.p_value == pytest.approx(2 * max(0.5**11, 1 / 1001))
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
    assert ratio.p_value == pytest.approx(2 * max(stats.binom.cdf(0, 11, 0.5), 1 / 1001))
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
