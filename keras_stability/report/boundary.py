"""The stability boundary: P(divergence) against the learning rate, and the critical learning rate.

Per sweep group (runs that differ only in `optimizer.learning_rate`), the divergence of each run is
fitted by a logistic curve in log10 LR, P(diverge) = σ(a + b · log10 LR), and the critical learning
rate — where half the seeds diverge — is 10^(−a/b), with a percentile bootstrap interval (seeds
resampled within each learning rate). "X stabilises training" is judged by the ratio of X's
critical learning rate to the baseline's: an interval above 1 confirms it, below 1 refutes it.

A grid that does not bracket a group's boundary still bounds it: a group none of whose runs diverged
has its critical learning rate above the grid's largest rate, one whose every run diverged below the
smallest, and so does a group whose fitted curve crosses one half only past the grid's end (a few
divergences inside the grid would otherwise put a "critical LR" of 10^5 on a 0.003–1 grid: the fit
says nothing out there) (`Boundary.censored`). Against a fitted baseline the ratio is then a bound,
tested as an intersection-union test (Berger 1982): "the variant's critical LR is above L and the
baseline's below L" holds with the larger of the two one-sided p-values — the binomial chance that
the n seeds at the grid's end show k or fewer divergences (k or more, below) were half of them to
diverge there (0.5^n when k = 0), and the bootstrap share of the baseline's replicates on the wrong
side of L — doubled for a two-sided test like the others.

The fit is Firth's penalised maximum likelihood (Firth 1993, Biometrika 80:27): a coarse grid is
often completely separated (every seed survives at 0.1, every one diverges at 0.2), where the plain
maximum-likelihood slope is infinite; Firth's estimate stays finite and puts the boundary between
the two, and it agrees with maximum likelihood when the data overlap.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from keras_stability.report.outcomes import LEARNING_RATE, SweepGroup
from keras_stability.report.statistics import CONFIDENCE, POWER, Comparison

BOUNDARY_BOOTSTRAPS = 1000  # each replicate is a Newton fit; 1,000 keep an interval's ends to ±0.01 decades


@dataclass(frozen=True)
class Cell:
    """The runs at one learning rate: how many, and how many diverged."""

    learning_rate: float
    runs: int
    diverged: int


@dataclass(frozen=True)
class Boundary:
    """A group's divergence cells, the fitted curve (None with fewer than two learning rates) and its
    critical learning rate with interval (None where the grid does not bracket it; `note` says why)."""

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


def cells_of(group: SweepGroup) -> tuple[Cell, ...]:
    cells = []
    for learning_rate in group.values(LEARNING_RATE):
        runs = group.at(LEARNING_RATE, learning_rate)
        cells.append(Cell(float(learning_rate), len(runs), sum(o.diverged for o in runs)))
    return tuple(cells)


def firth_logistic(x, diverged, runs, iterations=100, tolerance=1e-10):
    """(a, b) of σ(a + b·x) fitted to `diverged` of `runs` at each x by Firth's penalised likelihood."""
    design = np.column_stack([np.ones(len(x)), np.asarray(x, dtype=float)])
    k, n = np.asarray(diverged, dtype=float), np.asarray(runs, dtype=float)

    def penalised(beta):
        p = special.expit(design @ beta)
        information = design.T @ (design * (n * p * (1 - p))[:, None])
        sign, log_det = np.linalg.slogdet(information)
        likelihood = np.sum(k * np.log(np.clip(p, 1e-300, None)) + (n - k) * np.log(np.clip(1 - p, 1e-300, None)))
        return likelihood + 0.5 * log_det if sign > 0 else -np.inf, p, information

    beta = np.zeros(2)
    value, p, information = penalised(beta)
    for _ in range(iterations):
        inverse = np.linalg.inv(information)
        weights = n * p * (1 - p)
        hat = weights * np.einsum("ij,jk,ik->i", design, inverse, design)
        step = inverse @ (design.T @ (k - n * p + hat * (0.5 - p)))
        # Step halving keeps every update an ascent of the penalised likelihood.
        for _ in range(30):
            candidate = penalised(beta + step)
            if candidate[0] >= value - 1e-12:
                break
            step = step / 2
        beta = beta + step
        value, p, information = candidate
        if np.max(np.abs(step)) < tolerance:
            break
    return float(beta[0]), float(beta[1])


def log_critical(cells, diverged=None):
    """log10 of the critical LR fitted to `cells` (optionally with other diverged counts): ±inf when
    the grid does not bracket it (none / every run diverged), NaN when divergence falls with LR."""
    counts = [c.diverged for c in cells] if diverged is None else diverged
    runs = [c.runs for c in cells]
    if sum(counts) == 0:
        return math.inf
    if sum(counts) == sum(runs):
        return -math.inf
    intercept, slope = firth_logistic([math.log10(c.learning_rate) for c in cells], counts, runs)
    return -intercept / slope if slope > 0 else math.nan


def critical_replicates(cells, seed=0) -> np.ndarray:
    """Bootstrap replicates of log10 critical LR: each cell's seeds resampled (a binomial draw at its
    observed rate); replicates whose divergence falls with LR are dropped."""
    rng = np.random.default_rng(seed)
    runs = np.array([c.runs for c in cells])
    rates = np.array([c.diverged / c.runs for c in cells])
    draws = rng.binomial(runs, rates, size=(BOUNDARY_BOOTSTRAPS, len(cells)))
    replicates = np.array([log_critical(cells, list(row)) for row in draws])
    return replicates[~np.isnan(replicates)]


def interval(replicates, confidence=CONFIDENCE):
    """Percentile interval; an end that falls off the grid (±inf) is None (unbounded)."""
    if not len(replicates):
        return None, None
    ends = np.quantile(replicates, [0.5 - confidence / 2, 0.5 + confidence / 2], method="inverted_cdf")
    return tuple(float(10**e) if math.isfinite(e) else None for e in ends)


def boundary(group: SweepGroup) -> Boundary:
    """The stability boundary of a sweep group over the learning rate."""
    cells = cells_of(group)
    grid = f"{cells[0].learning_rate:g}–{cells[-1].learning_rate:g}" if cells else ""
    empty = dict(intercept=None, slope=None, critical_lr=None, low=None, high=None)
    if len(cells) < 2:
        return Boundary(group.label, group.variants, cells, **empty, note="one learning rate: no curve")
    estimate = log_critical(cells)
    if math.isinf(estimate):
        above = estimate > 0
        note = f"no run diverged in {grid}" if above else f"every run diverged in {grid}"
        return Boundary(group.label, group.variants, cells, **empty, note=note, censored="above" if above else "below")
    intercept, slope = firth_logistic(
        [math.log10(c.learning_rate) for c in cells], [c.diverged for c in cells], [c.runs for c in cells]
    )
    if math.isnan(estimate):
        return Boundary(
            group.label,
            group.variants,
            cells,
            intercept,
            slope,
            None,
            None,
            None,
            "divergence falls as the learning rate grows: no boundary",
        )
    if not math.log10(cells[0].learning_rate) <= estimate <= math.log10(cells[-1].learning_rate):
        above = estimate > math.log10(cells[-1].learning_rate)
        note = f"the fit crosses ½ past the grid {grid} (at {10**estimate:.3g}): the grid bounds it"
        return Boundary(
            group.label, group.variants, cells, intercept, slope, None, None, None, note, "above" if above else "below"
        )
    low, high = interval(critical_replicates(cells))
    return Boundary(group.label, group.variants, cells, intercept, slope, float(10**estimate), low, high, "")


def boundary_ratio(variant: Boundary, baseline: Boundary, confidence=CONFIDENCE) -> Comparison:
    """Critical LR of `variant` over `baseline`: the ratio, its bootstrap interval, a bootstrap p-value
    (twice the smaller share of replicate ratios on either side of 1) and the seeds per learning rate
    that would make the interval exclude 1 with `POWER` (the log ratio's spread shrinks as 1/√n)."""
    alpha = 1 - confidence
    test = "bootstrap ratio of critical LRs"
    if variant.censored or baseline.censored:
        return censored_ratio(variant, baseline, alpha)
    if variant.critical_lr is None or baseline.critical_lr is None:
        return Comparison(math.nan, math.nan, math.nan, math.nan, test, alpha, measure="ratio")
    a, b = critical_replicates(variant.cells, seed=1), critical_replicates(baseline.cells, seed=2)
    count = min(len(a), len(b))
    logs = a[:count] - b[:count]
    logs = logs[~np.isnan(logs)]  # inf − inf: both off the grid the same way
    ratio = variant.critical_lr / baseline.critical_lr
    low, high = (10 ** np.quantile(logs, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")).tolist()
    tails = min(np.count_nonzero(logs <= 0), np.count_nonzero(logs >= 0))
    p_value = min(1.0, 2 * (tails + 1) / (len(logs) + 1))
    finite = logs[np.isfinite(logs)]
    spread, effect = float(np.std(finite, ddof=1)) if len(finite) > 2 else math.nan, math.log10(ratio)
    seeds = None
    if spread > 0 and effect != 0:
        runs = min(c.runs for c in variant.cells + baseline.cells)
        z_sum = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(POWER)
        seeds = max(runs, math.ceil(runs * (z_sum * spread / effect) ** 2))
    return Comparison(ratio, float(low), float(high), p_value, test, alpha, seeds, measure="ratio")


def grid_end(boundary_: Boundary) -> Cell:
    """The cell that bounds a censored boundary: the largest learning rate above, the smallest below."""
    return boundary_.cells[-1] if boundary_.censored == "above" else boundary_.cells[0]


def side_p_value(boundary_: Boundary, bound: float, below: bool, seed: int) -> float:
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
    replicates = critical_replicates(boundary_.cells, seed)
    wrong = (
        np.count_nonzero(replicates >= math.log10(bound))
        if below
        else np.count_nonzero(replicates <= math.log10(bound))
    )
    return (wrong + 1) / (len(replicates) + 1)


def censored_ratio(variant: Boundary, baseline: Boundary, alpha: float) -> Comparison:
    """The ratio bound and intersection-union p-value where a grid does not bracket a boundary (see the
    module docstring); NaN where both are censored the same way or the other side has no fit."""
    test = "censored critical LR (intersection-union: binomial at the grid's end, bootstrap)"
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
        side_p_value(censored, bound, below=censored.censored == "below", seed=1),
        side_p_value(other, bound, below=censored.censored == "above", seed=2),
    )
    low, high = (ratio, math.inf) if higher else (0.0, ratio)
    return Comparison(ratio, low, high, min(1.0, p_value), test, alpha, measure="ratio")


def curve(boundary_: Boundary, learning_rates):
    """The fitted P(diverge) at `learning_rates` (None without a fit)."""
    if boundary_.slope is None:
        return None
    return special.expit(boundary_.intercept + boundary_.slope * np.log10(np.asarray(learning_rates, dtype=float)))


def boundaries(groups) -> list[Boundary]:
    return [boundary(group) for group in groups]
