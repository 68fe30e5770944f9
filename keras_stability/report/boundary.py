"""The stability boundary: P(divergence) against the learning rate, and the critical learning rate.

Per sweep group (runs that differ only in `optimizer.learning_rate`), the divergence of each run is
fitted by a logistic curve in log10 LR, P(diverge) = σ(a + b · log10 LR), by Firth's penalised
likelihood (Firth 1993, Biometrika 80:27: a coarse grid is often completely separated, every seed
surviving at 0.1 and diverging at 0.2, where the plain maximum-likelihood slope is infinite; Firth's
estimate stays finite and puts the boundary between the two). The critical learning rate, where
half the seeds diverge, is 10^(−a/b), with a profile-likelihood interval (`profile`): each cell's
binomial uncertainty, 0/11 and 11/11 cells included, enters through the likelihood. "X stabilises
training" is judged by the ratio of X's critical learning rate to the baseline's, with its profile
interval and the likelihood-ratio test of equal critical points (a χ²₁ tail, not a share of
resamples).

A logistic curve assumes divergence grows with the learning rate. A group with two cells where the
lower learning rate diverged significantly more often (Fisher's exact test, one-sided, α 0.05) is
non-monotone (`Boundary.nonmonotone`): its fit describes no boundary, and claims on it stay
inconclusive.

A grid that does not bracket a group's boundary still bounds it: a group none of whose runs diverged
has its critical learning rate above the grid's largest rate, one whose every run diverged below the
smallest, and so does a group whose fitted curve crosses one half only past the grid's end (the fit
says nothing out there) (`Boundary.censored`). Against a fitted baseline the ratio is then a bound,
tested as an intersection-union test (Berger 1982): "the variant's critical LR is above L and the
baseline's below L" holds with the larger of the two one-sided p-values — the binomial chance that
the n seeds at the grid's end show k or fewer divergences (k or more, below) were half of them to
diverge there (0.5^n when k = 0), and the baseline's profile-likelihood p-value (signed root) for
its critical LR lying beyond L — doubled for a two-sided test like the others. A censored baseline
answers no claim: the comparison is unanswerable by design, and the report says so.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from keras_stability.report.outcomes import LEARNING_RATE, SweepGroup
from keras_stability.report.profile import Group, Pair, likelihood_interval, signed_root
from keras_stability.report.statistics import CONFIDENCE, POWER, Comparison

MONOTONE_ALPHA = 0.05


@dataclass(frozen=True)
class Cell:
    """The runs at one learning rate: how many, how many diverged, and how many trained (None for a
    task without a chance level)."""

    learning_rate: float
    runs: int
    diverged: int
    trained: int | None = None


@dataclass(frozen=True)
class Boundary:
    """A group's divergence cells, the fitted curve (None with fewer than two learning rates) and its
    critical learning rate with interval (None where the grid does not bracket it; `note` says why).
    An interval end is None where the profile does not close within three decades of the grid."""

    label: str
    variants: tuple[str, ...]
    cells: tuple[Cell, ...]
    intercept: float | None
    slope: float | None
    critical_lr: float | None
    low: float | None
    high: float | None
    note: str
    censored: str | None = None  # "above" the grid (no run diverged) or "below" it (every run did)
    nonmonotone: str | None = None  # the two cells whose rates fall with the learning rate, when they do


def cells_of(group: SweepGroup) -> tuple[Cell, ...]:
    cells = []
    for learning_rate in group.values(LEARNING_RATE):
        runs = group.at(LEARNING_RATE, learning_rate)
        trained = None if any(o.trained is None for o in runs) else sum(o.trained for o in runs)
        cells.append(Cell(float(learning_rate), len(runs), sum(o.diverged for o in runs), trained))
    return tuple(cells)


def nonmonotone_cells(cells, alpha=MONOTONE_ALPHA) -> str | None:
    """The first pair of cells whose divergence falls significantly as the learning rate grows
    (one-sided Fisher's exact test at `alpha`), as text; None when the cells are consistent with a
    divergence rate that never falls."""
    for i, lower in enumerate(cells):
        for higher in cells[i + 1 :]:
            if lower.diverged * higher.runs <= higher.diverged * lower.runs:
                continue
            table = [[lower.diverged, lower.runs - lower.diverged], [higher.diverged, higher.runs - higher.diverged]]
            p_value = stats.fisher_exact(table, alternative="greater").pvalue
            if p_value < alpha:
                return (
                    f"divergence falls from {lower.diverged}/{lower.runs} at lr {lower.learning_rate:g} to "
                    f"{higher.diverged}/{higher.runs} at {higher.learning_rate:g} (Fisher p = {p_value:.3g})"
                )
    return None


def fitted_group(cells) -> Group:
    return Group([math.log10(c.learning_rate) for c in cells], [c.diverged for c in cells], [c.runs for c in cells])


def boundary(group: SweepGroup) -> Boundary:
    """The stability boundary of a sweep group over the learning rate."""
    cells = cells_of(group)
    grid = f"{cells[0].learning_rate:g}–{cells[-1].learning_rate:g}" if cells else ""
    empty = dict(intercept=None, slope=None, critical_lr=None, low=None, high=None)
    if len(cells) < 2:
        return Boundary(group.label, group.variants, cells, **empty, note="one learning rate: no curve")
    nonmonotone = nonmonotone_cells(cells)
    diverged, runs = sum(c.diverged for c in cells), sum(c.runs for c in cells)
    if diverged in (0, runs):
        above = diverged == 0
        note = f"no run diverged in {grid}" if above else f"every run diverged in {grid}"
        censored = "above" if above else "below"
        return Boundary(group.label, group.variants, cells, **empty, note=note, censored=censored)
    fit = fitted_group(cells)
    curve_only = dict(intercept=fit.intercept, slope=fit.slope, critical_lr=None, low=None, high=None)
    if fit.slope <= 0:
        note = "divergence falls as the learning rate grows: no boundary"
        return Boundary(group.label, group.variants, cells, **curve_only, note=note, nonmonotone=nonmonotone)
    if not math.log10(cells[0].learning_rate) <= fit.critical <= math.log10(cells[-1].learning_rate):
        censored = "above" if fit.critical > math.log10(cells[-1].learning_rate) else "below"
        note = f"the fit crosses ½ past the grid {grid} (at {10**fit.critical:.3g}): the grid bounds it"
        return Boundary(group.label, group.variants, cells, **curve_only, note=note, censored=censored)
    low, high = likelihood_interval(fit.deviance, fit.critical, fit.span())
    return Boundary(
        group.label,
        group.variants,
        cells,
        fit.intercept,
        fit.slope,
        float(10**fit.critical),
        None if low is None else float(10**low),
        None if high is None else float(10**high),
        "",
        nonmonotone=nonmonotone,
    )


def boundary_ratio(variant: Boundary, baseline: Boundary, confidence=CONFIDENCE) -> Comparison:
    """Critical LR of `variant` over `baseline`: the ratio, its profile-likelihood interval, the
    likelihood-ratio p-value of equal critical LRs, and the seeds per learning rate that would make the
    interval exclude 1 with `POWER` (the log ratio's spread, read off the interval, shrinks as 1/√n)."""
    alpha = 1 - confidence
    test = "profile likelihood ratio of critical LRs (Firth)"
    if variant.censored or baseline.censored:
        return censored_ratio(variant, baseline, alpha)
    if variant.critical_lr is None or baseline.critical_lr is None:
        return Comparison(math.nan, math.nan, math.nan, math.nan, test, alpha, measure="ratio")
    pair = Pair(fitted_group(variant.cells), fitted_group(baseline.cells))
    low, high = pair.interval(confidence)
    ratio = variant.critical_lr / baseline.critical_lr
    seeds = None
    effect = math.log10(ratio)
    if low is not None and high is not None and effect != 0:
        spread = (high - low) / (2 * stats.norm.ppf(1 - alpha / 2))
        runs = min(c.runs for c in variant.cells + baseline.cells)
        z_sum = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(POWER)
        seeds = max(runs, math.ceil(runs * (z_sum * spread / effect) ** 2))
    return Comparison(
        ratio,
        0.0 if low is None else float(10**low),
        math.inf if high is None else float(10**high),
        pair.p_value(),
        test,
        alpha,
        seeds,
        measure="ratio",
    )


def grid_end(boundary_: Boundary) -> Cell:
    """The cell that bounds a censored boundary: the largest learning rate above, the smallest below."""
    return boundary_.cells[-1] if boundary_.censored == "above" else boundary_.cells[0]


def side_p_value(boundary_: Boundary, bound: float, below: bool) -> float:
    """One-sided p-value that `boundary_`'s critical LR is below `bound` (`below`) or above it."""
    if boundary_.censored:
        if (boundary_.censored == "below") != below:
            return 1.0
        end = grid_end(boundary_)
        # The bound lies past the group's own grid end: its runs say nothing about it.
        beyond = end.learning_rate < bound if below else end.learning_rate > bound
        if not (beyond or end.learning_rate == bound):
            return 1.0
        # P(this few divergences at the grid's end | half would diverge there), or this many below.
        tail = (
            stats.binom.sf(end.diverged - 1, end.runs, 0.5) if below else stats.binom.cdf(end.diverged, end.runs, 0.5)
        )
        return float(tail)
    root = signed_root(fitted_group(boundary_.cells), math.log10(bound))
    return float(stats.norm.cdf(root) if below else stats.norm.sf(root))


def censored_ratio(variant: Boundary, baseline: Boundary, alpha: float) -> Comparison:
    """The ratio bound and intersection-union p-value where a grid does not bracket a boundary (see the
    module docstring); NaN where both are censored the same way or the other side has no fit."""
    test = "censored critical LR (intersection-union: binomial at the grid's end, profile likelihood)"
    nothing = Comparison(math.nan, math.nan, math.nan, math.nan, test, alpha, measure="ratio")
    censored, other = (variant, baseline) if variant.censored else (baseline, variant)
    if other.censored == censored.censored or (not other.censored and other.critical_lr is None):
        return nothing
    bound = grid_end(censored).learning_rate
    reference = grid_end(other).learning_rate if other.censored else other.critical_lr
    # The censored side's critical LR is beyond `bound`, so the ratio is beyond bound / reference.
    higher = (censored is variant) == (censored.censored == "above")
    ratio = bound / reference if censored is variant else reference / bound
    p_value = 2 * max(
        side_p_value(censored, bound, below=censored.censored == "below"),
        side_p_value(other, bound, below=censored.censored == "above"),
    )
    low, high = (ratio, math.inf) if higher else (0.0, ratio)
    return Comparison(ratio, low, high, min(1.0, p_value), test, alpha, measure="ratio")


def curve(boundary_: Boundary, learning_rates):
    """The fitted P(diverge) at `learning_rates` (None without a fit)."""
    if boundary_.slope is None:
        return None
    return special.expit(boundary_.intercept + boundary_.slope * np.log10(np.asarray(learning_rates, dtype=float)))
