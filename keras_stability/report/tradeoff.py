"""The threshold trade-off: accuracy and divergence against a clip's threshold and its clip rate.

Two clips at arbitrary thresholds compare two arbitrary amounts of clipping (doc 000: a value limit
of 0.1 let global norms of 3.3–4.2 through). Each single-transform stabilizer swept over its
threshold becomes a curve of (threshold, share of steps clipped, test accuracy, divergence); two
transforms are compared where they clip the same share of steps.
"""

import math
from dataclasses import dataclass

import numpy as np

from keras_stability.report.outcomes import sweep_groups
from keras_stability.report.statistics import Comparison, compare_means

# The setting that sets how hard each transform clips (tests tie these to the transform schemas).
THRESHOLDS = {
    "clip_by_value": "limit",
    "clip_by_norm": "max_norm",
    "clip_by_global_norm": "max_norm",
    "normalize_gradient": "scale",
    "adaptive_clip": "clip_factor",
    "autoclip": "percentile",
    "zclip": "z_threshold",
    "clip_by_l1_norm": "max_norm",
    "regularize_gradient": "l2",
    "quantized_ema_clip": "limit",
    "adagc": "clip_ratio",
}


@dataclass(frozen=True)
class Point:
    """One threshold: its runs, how many diverged or trained, mean test accuracy and clip share, and
    the seeds' test accuracies (for tests at a matched clip rate)."""

    threshold: float
    runs: int
    diverged: int
    trained: int | None
    test_accuracy: float
    clip_share: float | None
    test_accuracies: tuple[float, ...]


@dataclass(frozen=True)
class Curve:
    """A transform swept over its threshold, everything else fixed; points by threshold."""

    label: str
    transform: str
    variants: tuple[str, ...]
    points: tuple[Point, ...]


def threshold_path(transform):
    return f"stabilizer.transforms.0.{THRESHOLDS[transform]}"


def point(threshold, outcomes):
    shares = [o.clip_share for o in outcomes if o.clip_share is not None]
    trained = None if any(o.trained is None for o in outcomes) else sum(bool(o.trained) for o in outcomes)
    tests = tuple(o.test_accuracy for o in sorted(outcomes, key=lambda o: o.seed))
    return Point(
        float(threshold),
        len(outcomes),
        sum(o.diverged for o in outcomes),
        trained,
        float(np.mean(tests)),
        float(np.mean(shares)) if shares else None,
        tests,
    )


def curves(outcomes, baseline="") -> list[Curve]:
    """Every single-transform stabilizer in `outcomes`, as a curve over its threshold."""
    result = []
    for transform in THRESHOLDS:
        clipped = [
            o
            for o in outcomes
            if len((o.config.get("stabilizer") or {}).get("transforms") or []) == 1
            and o.config["stabilizer"]["transforms"][0].get("name") == transform
        ]
        for group in sweep_groups(clipped, threshold_path(transform), baseline):
            path = threshold_path(transform)
            points = tuple(point(value, group.at(path, value)) for value in group.values(path))
            result.append(Curve(group.label, transform, group.variants, points))
    return result


# How far a point's clip share may lie from a claim's `clip_rate` and still count as matched: a
# comparison of 88 % against 15 % clipped steps is not one "at the same share".
MATCH_TOLERANCE = 0.1


def nearest(curve: Curve, clip_rate):
    """The curve's point whose clip share is closest to `clip_rate` (None without telemetry)."""
    measured = [p for p in curve.points if p.clip_share is not None]
    return min(measured, key=lambda p: abs(p.clip_share - clip_rate)) if measured else None


def matched_comparison(variant: Curve, baseline: Curve, clip_rate) -> tuple[Comparison, Point | None, Point | None]:
    """Test accuracy of the two curves' points nearest `clip_rate` in clip share, and the points; no
    comparison (NaN) unless both shares lie within `MATCH_TOLERANCE` of `clip_rate`."""
    a, b = nearest(variant, clip_rate), nearest(baseline, clip_rate)
    if a is None or b is None or max(abs(p.clip_share - clip_rate) for p in (a, b)) > MATCH_TOLERANCE:
        return Comparison(math.nan, math.nan, math.nan, math.nan, "permutation"), a, b
    return compare_means(a.test_accuracies, b.test_accuracies), a, b
