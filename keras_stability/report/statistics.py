"""Statistics over seeds: mean ± t-interval, Welch's test and interval, Fisher's test for divergence."""

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


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


def mean_ci(values, confidence=CONFIDENCE):
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
    """`variant − baseline`: the difference of means, its interval and a p-value."""

    difference: float
    ci: float
    p_value: float
    test: str
    alpha: float = 1 - CONFIDENCE

    @property
    def significant(self):
        return math.isfinite(self.p_value) and self.p_value < self.alpha

    def text(self, digits=4):
        if not math.isfinite(self.difference):
            return "–"
        interval = f" ± {self.ci:.{digits}f}" if math.isfinite(self.ci) else ""
        verdict = "significant" if self.significant else "not significant"
        return f"{self.difference:+.{digits}f}{interval} (p = {self.p_value:.3g}, {self.test}, {verdict})"


def welch(variant, baseline, confidence=CONFIDENCE):
    """Welch's t-test and Welch–Satterthwaite interval for mean(variant) − mean(baseline).

    Suits few seeds with unequal variances. Needs ≥ 2 values on each side; identical constant samples
    give p = 1 (no evidence of a difference), not NaN.
    """
    a, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return Comparison(float(a.mean() - b.mean()) if len(a) and len(b) else math.nan, math.nan, math.nan, "Welch t")
    difference = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return Comparison(difference, 0.0, 1.0 if difference == 0 else 0.0, "Welch t")
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(va + vb)
    with warnings.catch_warnings():
        # scipy warns on nearly identical samples; the p-value it returns is still the right one.
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(difference, half, p_value, "Welch t", 1 - confidence)


def divergence_test(variant_diverged, variant_runs, baseline_diverged, baseline_runs, alpha=1 - CONFIDENCE):
    """Fisher's exact test on the 2×2 table of diverged / not diverged runs; difference of rates."""
    if variant_runs == 0 or baseline_runs == 0:
        return Comparison(math.nan, math.nan, math.nan, "Fisher exact", alpha)
    table = [[variant_diverged, variant_runs - variant_diverged], [baseline_diverged, baseline_runs - baseline_diverged]]
    p_value = float(stats.fisher_exact(table).pvalue)
    difference = variant_diverged / variant_runs - baseline_diverged / baseline_runs
    return Comparison(difference, math.nan, p_value, "Fisher exact", alpha)
