"""Firth's penalised likelihood of a logistic dose-response curve, and its profiles.

P(diverge) = σ(a + b·x) at x = log10(learning rate); the critical point θ = −a/b is where half the
seeds diverge. Intervals and tests on θ, and on the difference of two groups' θ, come from the
profile of the penalised log-likelihood (Heinze & Schemper 2002, "A solution to the problem of
separation in logistic regression", Statistics in Medicine 21:2409): every cell's binomial
uncertainty enters through the likelihood, a cell seen at 0/11 or 11/11 included, and the p-value of
a likelihood-ratio test is a tail of χ²₁, not a share of resamples.
"""

import math

import numpy as np
from scipy import optimize, special, stats

from keras_stability.report.statistics import CONFIDENCE

# Slopes per decade of learning rate searched by a profile: from nearly flat to a step within 0.001
# decades (Firth's estimate stays finite on separated data, well inside this range).
LOG_SLOPE_RANGE = (math.log(1e-3), math.log(1e4))
# How far past its grid a profile looks for an interval's end, in decades; an end beyond is unbounded.
REACH = 3.0


def penalised_log_likelihood(intercept, slope, x, diverged, runs) -> float:
    """ℓ(a, b) + ½ log det I(a, b): Firth's penalised binomial log-likelihood (−inf where I is singular)."""
    design = np.column_stack([np.ones(len(x)), x])
    p = special.expit(intercept + slope * x)
    weights = runs * p * (1 - p)
    sign, log_det = np.linalg.slogdet(design.T @ (design * weights[:, None]))
    if sign <= 0:
        return -math.inf
    likelihood = np.sum(diverged * special.log_expit(intercept + slope * x))
    likelihood += np.sum((runs - diverged) * special.log_expit(-(intercept + slope * x)))
    return float(likelihood + 0.5 * log_det)


def firth_logistic(x, diverged, runs, iterations=100, tolerance=1e-10) -> tuple[float, float]:
    """(a, b) of σ(a + b·x) fitted to `diverged` of `runs` at each x by Firth's penalised likelihood."""
    x, k, n = (np.asarray(values, dtype=float) for values in (x, diverged, runs))
    design = np.column_stack([np.ones(len(x)), x])
    beta = np.zeros(2)
    value = penalised_log_likelihood(*beta, x, k, n)
    for _ in range(iterations):
        p = special.expit(design @ beta)
        weights = n * p * (1 - p)
        inverse = np.linalg.inv(design.T @ (design * weights[:, None]))
        hat = weights * np.einsum("ij,jk,ik->i", design, inverse, design)
        step = inverse @ (design.T @ (k - n * p + hat * (0.5 - p)))
        # Step halving keeps every update an ascent of the penalised likelihood.
        for _ in range(30):
            candidate = penalised_log_likelihood(*(beta + step), x, k, n)
            if candidate >= value - 1e-12:
                break
            step = step / 2
        beta, value = beta + step, candidate
        if np.max(np.abs(step)) < tolerance:
            break
    return float(beta[0]), float(beta[1])


class Group:
    """One group's cells with its penalised fit, profiled over the slope at a given critical point."""

    def __init__(self, x, diverged, runs):
        self.x, self.diverged, self.runs = (np.asarray(values, dtype=float) for values in (x, diverged, runs))
        self.intercept, self.slope = firth_logistic(self.x, self.diverged, self.runs)
        self.best = penalised_log_likelihood(self.intercept, self.slope, self.x, self.diverged, self.runs)

    @property
    def critical(self) -> float:
        return -self.intercept / self.slope

    def profile(self, theta: float) -> float:
        """max over b > 0 of the penalised log-likelihood with its curve crossing ½ at `theta`."""

        def negative(log_slope):
            slope = math.exp(log_slope)
            value = penalised_log_likelihood(-slope * theta, slope, self.x, self.diverged, self.runs)
            return -value if math.isfinite(value) else 1e300  # a singular information: no fit there

        result = optimize.minimize_scalar(negative, bounds=LOG_SLOPE_RANGE, method="bounded", options={"xatol": 1e-6})
        return -float(result.fun)

    def deviance(self, theta: float) -> float:
        """Twice the penalised log-likelihood lost by moving the critical point to `theta` (≥ 0)."""
        return max(0.0, 2 * (self.best - self.profile(theta)))

    def span(self) -> tuple[float, float]:
        return float(self.x.min()) - REACH, float(self.x.max()) + REACH


def likelihood_interval(deviance, estimate, span, confidence=CONFIDENCE) -> tuple[float | None, float | None]:
    """The ends of {t: deviance(t) ≤ χ²₁ quantile} around `estimate`; None past `span` (unbounded)."""
    critical = stats.chi2.ppf(confidence, 1)
    ends = []
    for end in span:
        if deviance(end) <= critical:
            ends.append(None)
        else:
            ends.append(float(optimize.brentq(lambda t: deviance(t) - critical, *sorted((estimate, end)), xtol=1e-6)))
    return ends[0], ends[1]


def signed_root(group: Group, theta: float) -> float:
    """The signed root of the profile deviance at `theta`: positive where the estimate lies above it;
    approximately standard normal when the critical point is `theta`."""
    return math.copysign(math.sqrt(group.deviance(theta)), group.critical - theta)


class Pair:
    """Two groups' critical points and the profile of their difference δ = θ_variant − θ_baseline."""

    def __init__(self, variant: Group, baseline: Group):
        self.variant, self.baseline = variant, baseline
        self.estimate = variant.critical - baseline.critical
        low = min(variant.span()[0], baseline.span()[0])
        high = max(variant.span()[1], baseline.span()[1])
        self.span_theta = (low, high)

    def deviance(self, delta: float) -> float:
        """Twice the joint penalised log-likelihood lost by constraining θ_variant − θ_baseline = δ."""

        def negative(theta):
            return -(self.variant.profile(theta + delta) + self.baseline.profile(theta))

        result = optimize.minimize_scalar(negative, bounds=self.span_theta, method="bounded", options={"xatol": 1e-6})
        return max(0.0, 2 * (self.variant.best + self.baseline.best + float(result.fun)))

    def p_value(self) -> float:
        """Two-sided likelihood-ratio p-value of equal critical points (δ = 0)."""
        return float(stats.chi2.sf(self.deviance(0.0), 1))

    def interval(self, confidence=CONFIDENCE) -> tuple[float | None, float | None]:
        width = self.span_theta[1] - self.span_theta[0]
        return likelihood_interval(
            self.deviance, self.estimate, (self.estimate - width, self.estimate + width), confidence
        )
