"""Statistics over seeds: estimates, two-sample tests with effect intervals, and seeds for a stated power.

Which test for which outcome (the choice `compare_means` / `compare_rates` make):

- A continuous outcome (accuracy, loss, gradient norm) over seeds is often bimodal — a run trains or
  sits at chance — so a t-test's normal model is wrong and over-confident with 5–10 seeds (doc 004:
  p = 3.8e-9 by Welch, 0.012 by rank). It is compared by a two-sided **permutation test** of the
  difference of means (exact enumeration of every split while there are at most `EXACT_SPLITS`,
  otherwise `RESAMPLES` seeded random splits), with a **percentile bootstrap** interval of the
  difference (resampling seeds within each side).
- A rate (diverged or not, trained or not) is a 2 × 2 table: **Fisher's exact test**, with
  Newcombe's hybrid score interval for the difference of rates.
- Beside each test: the seeds per side a two-sided test at `alpha` needs for `POWER` at the effect
  observed (normal approximation; Cohen's h for rates). None when there is no effect to detect.
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
POWER = 0.8
EXACT_SPLITS = 200_000  # C(20, 10) = 184,756: ten seeds against ten are enumerated exactly
RESAMPLES = 20_000
BOOTSTRAPS = 10_000
MAX_SEEDS = 10_000  # beyond this, "seeds needed" is reported as unreachable (None)


@dataclass(frozen=True)
class Estimate:
    """Mean of `n` values with a `CONFIDENCE` t-interval (half-width `ci`; NaN when n < 2)."""

    mean: float
    ci: float
    n: int

    def text(self, digits=4):
        if self.n == 0:
            return "–"
        if not math.isfinite(self.ci):
            return f"{self.mean:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} ± {self.ci:.{digits}f} (n={self.n})"


def mean_ci(values, confidence=CONFIDENCE) -> Estimate:
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    mean = float(values.mean())
    if n < 2:
        return Estimate(mean, math.nan, n)
    sem = float(values.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sem, n)


@dataclass(frozen=True)
class Comparison:
    """The effect of `variant` against `baseline` — `measure` "difference" (variant − baseline) or
    "ratio" (variant / baseline) — its interval [low, high], a p-value, and the seeds per side needed
    for `POWER` at this effect (None: no effect, or out of reach)."""

    difference: float
    low: float
    high: float
    p_value: float
    test: str
    alpha: float = 1 - CONFIDENCE
    seeds_needed: int | None = None
    measure: str = "difference"
    smallest_p: float = 0.0  # the smallest p-value the design can give (an exact test's floor)

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p_value) and self.p_value < self.alpha

    @property
    def can_reach_significance(self) -> bool:
        return self.smallest_p < self.alpha

    def caveat(self) -> str:
        """Why "not significant" may say little: a design that cannot reach α, or an interval that
        excludes the null although the test does not reject it; "" when neither."""
        if not self.can_reach_significance:
            return f"this design cannot reach p < {self.alpha:g}: its smallest possible p is {self.smallest_p:.3g}"
        neutral = 1.0 if self.measure == "ratio" else 0.0
        bound = self.measure == "ratio" and (self.low == 0 or math.isinf(self.high))  # a censored bound
        if not (self.significant or bound) and math.isfinite(self.low) and not self.low <= neutral <= self.high:
            return "the interval excludes no effect while the test does not reject it: with few seeds a percentile bootstrap is too narrow, and the test decides"
        return ""

    def text(self, digits=4) -> str:
        if not math.isfinite(self.difference):
            return "–"
        sign = "+" if self.measure == "difference" else ""
        interval = f" [{self.low:{sign}.{digits}f}, {self.high:{sign}.{digits}f}]" if math.isfinite(self.low) else ""
        verdict = "significant" if self.significant else "not significant"
        text = f"{'×' if self.measure == 'ratio' else ''}{self.difference:{sign}.{digits}f}{interval} (p = {self.p_value:.3g}, {self.test}, {verdict})"
        if not self.significant and self.seeds_needed:
            text += f"; {self.seeds_needed} seeds per side for {POWER:.0%} power"
        if caveat := self.caveat():
            text += f"; {caveat}"
        return text


def permutation_p_value(variant, baseline, seed=0) -> float:
    """Two-sided permutation p-value of mean(variant) − mean(baseline): twice the smaller share of
    relabellings of the pooled values whose difference is at or beyond the observed one on each side
    (scipy's convention; with unequal sides the null distribution is not symmetric)."""
    a, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    pooled, n = np.concatenate([a, b]), len(a)
    observed = a.mean() - b.mean()
    if math.comb(len(pooled), n) <= EXACT_SPLITS:
        chosen = np.array(list(itertools.combinations(range(len(pooled)), n)), dtype=np.int64).reshape(-1, n)
        exact = True
    else:
        rng = np.random.default_rng(seed)
        chosen = np.argsort(rng.random((RESAMPLES, len(pooled))), axis=1)[:, :n]
        exact = False
    sums = pooled[chosen].sum(axis=1)
    differences = sums / n - (pooled.sum() - sums) / len(b)
    # Equal differences computed in another order differ in the last bits; they still count as ties.
    tie = 1e-12 * max(1.0, abs(observed))
    tails = [np.count_nonzero(differences <= observed + tie), np.count_nonzero(differences >= observed - tie)]
    shares = [k / len(chosen) if exact else (k + 1) / (len(chosen) + 1) for k in tails]
    return min(1.0, 2 * min(shares))


def bootstrap_interval(variant, baseline, confidence=CONFIDENCE, seed=0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(variant) − mean(baseline), seeds resampled per side."""
    a, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, len(a), (BOOTSTRAPS, len(a)))].mean(axis=1)
    means_b = b[rng.integers(0, len(b), (BOOTSTRAPS, len(b)))].mean(axis=1)
    low, high = np.quantile(means_a - means_b, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(low), float(high)


def normal_power(effect, n, alpha=1 - CONFIDENCE) -> float:
    """Power of a two-sided z-test of standardized effect `effect` with `n` per side (both tails)."""
    z, shift = stats.norm.ppf(1 - alpha / 2), abs(effect) * math.sqrt(n / 2)
    return float(stats.norm.cdf(shift - z) + stats.norm.cdf(-shift - z))


def seeds_for_power(effect, alpha=1 - CONFIDENCE, power=POWER) -> int | None:
    """The fewest seeds per side for which `normal_power(effect, n) ≥ power`; None without an effect."""
    if not (math.isfinite(effect) and effect != 0):
        return None
    z_sum = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, math.floor(2 * (z_sum / effect) ** 2))  # the one-tail closed form, a lower bound
    while normal_power(effect, n, alpha) < power:
        n += 1
    return n if n <= MAX_SEEDS else None


def smallest_permutation_p(n_variant: int, n_baseline: int) -> float:
    """The smallest two-sided p-value a permutation test of n against m values can give: the two
    extreme splits out of C(n + m, n) (an exact 2-vs-2 test stops at 2/6 = 1/3).

    >>> smallest_permutation_p(2, 2)
    0.3333333333333333
    """
    splits = math.comb(n_variant + n_baseline, n_variant)
    return min(1.0, 2 / splits) if splits <= EXACT_SPLITS else 2 / (RESAMPLES + 1)


def fewest_seeds_for_significance(alpha=1 - CONFIDENCE) -> int:
    """The fewest seeds per side whose permutation test can reject at `alpha` at all (4 at 0.05)."""
    n = 2
    while smallest_permutation_p(n, n) >= alpha:
        n += 1
    return n


def compare_means(variant, baseline, confidence=CONFIDENCE) -> Comparison:
    """Permutation test and bootstrap interval for mean(variant) − mean(baseline) (≥ 2 values a side);
    the seeds needed are never fewer than a permutation test needs to reach `alpha` at all."""
    a, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    alpha = 1 - confidence
    if len(a) < 2 or len(b) < 2:
        difference = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
        return Comparison(difference, math.nan, math.nan, math.nan, "permutation", alpha)
    difference = float(a.mean() - b.mean())
    low, high = bootstrap_interval(a, b, confidence)
    spread = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    effect = difference / spread if spread > 0 else (math.inf if difference else 0.0)
    seeds = 2 if math.isinf(effect) else seeds_for_power(effect, alpha)
    seeds = None if seeds is None else max(seeds, fewest_seeds_for_significance(alpha))
    floor = smallest_permutation_p(len(a), len(b))
    return Comparison(difference, low, high, permutation_p_value(a, b), "permutation", alpha, seeds, smallest_p=floor)


def wilson_interval(count, total, confidence=CONFIDENCE) -> tuple[float, float]:
    z = stats.norm.ppf(0.5 + confidence / 2)
    rate = count / total
    centre = (rate + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(rate * (1 - rate) / total + z * z / (4 * total * total))
    return centre - half, centre + half


def compare_rates(variant_count, variant_runs, baseline_count, baseline_runs, confidence=CONFIDENCE) -> Comparison:
    """Fisher's exact test on the 2 × 2 table; difference of rates with Newcombe's hybrid score interval."""
    alpha = 1 - confidence
    if variant_runs == 0 or baseline_runs == 0:
        return Comparison(math.nan, math.nan, math.nan, math.nan, "Fisher exact", alpha)
    table = [[variant_count, variant_runs - variant_count], [baseline_count, baseline_runs - baseline_count]]
    p_value = float(stats.fisher_exact(table).pvalue)
    # Fisher's smallest p with these margins of runs: every divergence on one side.
    extreme = [[variant_runs, 0], [0, baseline_runs]]
    smallest = float(stats.fisher_exact(extreme).pvalue)
    rate_a, rate_b = variant_count / variant_runs, baseline_count / baseline_runs
    (low_a, high_a), (low_b, high_b) = (
        wilson_interval(variant_count, variant_runs, confidence),
        wilson_interval(baseline_count, baseline_runs, confidence),
    )
    difference = rate_a - rate_b
    low = difference - math.sqrt((rate_a - low_a) ** 2 + (high_b - rate_b) ** 2)
    high = difference + math.sqrt((high_a - rate_a) ** 2 + (rate_b - low_b) ** 2)
    cohens_h = 2 * math.asin(math.sqrt(rate_a)) - 2 * math.asin(math.sqrt(rate_b))
    seeds = seeds_for_power(cohens_h, alpha)
    return Comparison(difference, low, high, p_value, "Fisher exact", alpha, seeds, smallest_p=smallest)
