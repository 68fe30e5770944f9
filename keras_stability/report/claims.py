"""The claims ledger: published or folk claims, each judged by the analysis it names.

`analysis` picks how a claim is judged (default `point`):

- `point`: `metric` of `variant` against `baseline` at the experiment's own settings (`solved_rate`:
  the share of runs whose test MSE is at or below the claim's `solved_mse`, for regression tasks);
- `boundary`: the ratio of `variant`'s critical learning rate to `baseline`'s ("X stabilises
  training": `expect: higher`);
- `tuned`: test accuracy, each side at its best learning rate chosen on validation accuracy;
- `threshold`: test accuracy of two clipping transforms, each at the threshold whose share of
  clipped steps is nearest `clip_rate` (within 10 points of it, or the claim stays inconclusive).
"""

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats

from keras_stability.config.loading import read_yaml
from keras_stability.config.sweep import file_variant
from keras_stability.config.validation import validate
from keras_stability.report.boundary import Boundary, boundary_ratio
from keras_stability.report.outcomes import holds
from keras_stability.report.provenance import exploratory_reason
from keras_stability.report.published import EntryId, PublishedResult
from keras_stability.report.statistics import Comparison
from keras_stability.report.summary import METRICS, SHARPNESS_METRICS, compare, compare_solved
from keras_stability.report.tradeoff import MATCH_TOLERANCE, matched_comparison
from keras_stability.report.tuned import tuned_comparison

CLAIM_METRICS = (*METRICS, *SHARPNESS_METRICS) + ("divergence_rate", "trained_rate", "solved_rate")
ANALYSES = ("point", "boundary", "tuned", "threshold")
MEASURED = {
    "boundary": "critical learning rate",
    "tuned": "test accuracy at the tuned learning rate",
    "threshold": "test accuracy at a matched clip rate",
}


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: EntryId
    text: str
    source: str
    experiment: str
    analysis: Literal[ANALYSES] = "point"
    metric: Literal[CLAIM_METRICS] | None = None
    clip_rate: Annotated[float, Field(gt=0, lt=1)] | None = None
    solved_mse: Annotated[float, Field(gt=0)] | None = None
    variant: str
    baseline: str | None = None
    expect: Literal["higher", "lower"]
    exploratory: bool = False

    @model_validator(mode="after")
    def keys_of_the_analysis(self):
        if self.analysis == "point" and self.metric is None:
            raise ValueError("a `point` claim needs `metric:` (one of " + ", ".join(CLAIM_METRICS) + ")")
        if self.analysis != "point" and self.metric is not None:
            raise ValueError(
                f"`metric` applies to `point` claims only; the {self.analysis} analysis measures "
                f"{MEASURED[self.analysis]}. Received: metric={self.metric!r}; remove it"
            )
        if (self.metric == "solved_rate") != (self.solved_mse is not None):
            raise ValueError(
                "`solved_mse` (> 0: the test MSE at or below which a run solved the task) is needed by "
                f"`metric: solved_rate` and only by it. Received: metric={self.metric!r}, solved_mse={self.solved_mse!r}"
            )
        if (self.analysis == "threshold") != (self.clip_rate is not None):
            raise ValueError(
                "`clip_rate` (0 < clip_rate < 1) is needed by `threshold` claims and only by them. "
                f"Received: analysis={self.analysis!r}, clip_rate={self.clip_rate!r}"
            )
        return self

    @property
    def measured(self) -> str:
        return self.metric if self.analysis == "point" else MEASURED[self.analysis]


class ClaimsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    claims: list[Claim]
    published: list[PublishedResult] = []


def load_claims_file(path) -> ClaimsFile:
    """A claims YAML file; errors are located like experiment files' (`ConfigError`)."""
    data, marks = read_yaml(path)
    return validate(ClaimsFile, data, [((), marks)])


def load_claims(path) -> list[Claim]:
    return load_claims_file(path).claims


def point_comparison(claim, analysis, baseline):
    variants = analysis.summary["variants"]
    missing = [name for name in (claim.variant, baseline) if name not in variants]
    if missing:
        return None, f"no results for variant {missing[0]!r}"
    if claim.metric == "solved_rate":
        return Comparison(**compare_solved(variants[claim.variant], variants[baseline], claim.solved_mse)), ""
    comparisons = compare(variants[claim.variant], variants[baseline])
    if claim.metric not in comparisons:
        return None, f"no {claim.metric} for {claim.experiment!r}: its dataset has no chance level"
    return Comparison(**comparisons[claim.metric]), ""


def find(records, variant):
    return next((record for record in records if holds(record.variants, variant)), None)


def sweep_comparison(claim, analysis, baseline):
    """(Comparison, "") or (None, why not) for a boundary, tuned or threshold claim."""
    if claim.analysis == "threshold":
        records = analysis.curves
    else:
        records = analysis.boundaries if claim.analysis == "boundary" else analysis.tuned
    pair = [find(records, name) for name in (claim.variant, baseline)]
    if None in pair:
        missing = (claim.variant, baseline)[pair.index(None)]
        return None, f"no {claim.analysis} analysis holds variant {missing!r}"
    if pair[0] is pair[1]:
        return None, f"{claim.variant!r} and {baseline!r} are one sweep of the same training"
    if claim.analysis == "boundary":
        if pair[1].censored:
            return None, f"unanswerable by design: the baseline ({pair[1].label}): {pair[1].note}"
        falling = "; ".join(f"{b.label}: {b.nonmonotone}" for b in pair if b.nonmonotone)
        if falling:
            return None, f"non-monotone cells, which no logistic boundary describes ({falling})"
        comparison = boundary_ratio(*pair)
        notes = "; ".join(f"{b.label}: {b.note}" for b in pair if b.critical_lr is None)
        if not math.isfinite(comparison.difference):
            return None, f"no critical learning rate ({notes})"
        return comparison, f" ({notes})" if notes else ""
    if claim.analysis == "tuned":
        return tuned_comparison(*pair), f" (best lr {pair[0].best_lr:g} vs {pair[1].best_lr:g})"
    comparison, point_a, point_b = matched_comparison(*pair, claim.clip_rate)
    if point_a is None or point_b is None:
        return None, "no clip-rate telemetry to match"
    points = (
        f"threshold {point_a.threshold:g} clipping {point_a.clip_share:.0%} of steps vs "
        f"{point_b.threshold:g} clipping {point_b.clip_share:.0%}"
    )
    if not math.isfinite(comparison.difference):
        return None, (
            f"no matched clip rate: the nearest to {claim.clip_rate:.0%} are {points} "
            f"(each must be within {MATCH_TOLERANCE:.0%})"
        )
    return comparison, f" ({points})"


def trains_where_baseline_fails(variant: Boundary, baseline: Boundary) -> bool | None:
    """Whether `variant` trains in most seeds at some learning rate where most of the baseline's seeds
    diverge; None without a chance level (or no such learning rate on both grids)."""
    failing = {c.learning_rate for c in baseline.cells if 2 * c.diverged > c.runs}
    cells = [c for c in variant.cells if c.learning_rate in failing]
    if not cells or any(c.trained is None for c in cells):
        return None
    return any(2 * c.trained > c.runs for c in cells)


def trains(claim, analysis, baseline) -> bool | None:
    """For a stability claim (a higher critical LR, a lower divergence rate): whether its arm also
    trains (`judging.VERDICT_RULES`); None for other claims or where it cannot be told."""
    if claim.analysis == "boundary" and claim.expect == "higher":
        pair = [find(analysis.boundaries, name) for name in (claim.variant, baseline)]
        return None if None in pair else trains_where_baseline_fails(*pair)
    if claim.analysis == "point" and claim.metric == "divergence_rate" and claim.expect == "lower":
        summary = analysis.summary["variants"].get(claim.variant) or {}
        if summary.get("trained") is None or not summary.get("finished"):
            return None
        return 2 * summary["trained"] > summary["finished"]
    return None


def judge(claim, analyses, registration=None) -> dict:
    """A verdict dict: confirmed / refuted / inconclusive, with the numbers behind it.

    Confirmed: the effect goes the expected way and is significant. Refuted: significant the other
    way. Inconclusive: not significant, or nothing to compare. The seeds a decisive test would need
    are given beside an inconclusive verdict.
    """
    analysis = analyses.get(claim.experiment)
    verdict = {
        "claim": claim.model_dump(),
        "verdict": "inconclusive",
        "reason": "",
        "comparison": None,
        "registered": None if registration is None else {"commit": registration.commit, "time": registration.time},
        "trains": None,
    }
    why_exploratory = exploratory_reason(claim, registration, analysis.provenance if analysis else None)
    verdict.update(exploratory=bool(why_exploratory), exploratory_reason=why_exploratory)
    if analysis is None:
        verdict["reason"] = f"no results for experiment {claim.experiment!r}"
        return verdict
    baseline = claim.baseline or analysis.summary["baseline"]
    if claim.analysis == "point":
        comparison, detail = point_comparison(claim, analysis, baseline)
    else:  # over a sweep: the baseline is the file's variant, whichever of its cells the summary names
        baseline = file_variant(baseline)
        comparison, detail = sweep_comparison(claim, analysis, baseline)
    if comparison is None:
        verdict["reason"] = detail
        if detail.startswith("unanswerable"):
            verdict["verdict"] = "unanswerable"
        return verdict
    verdict["trains"] = trains(claim, analysis, baseline)
    verdict["comparison"] = {**strict_comparison(comparison), "baseline": baseline}
    effect, p_value = comparison.difference, comparison.p_value
    if not (math.isfinite(effect) and math.isfinite(p_value)):
        verdict["reason"] = "too few finished runs to test (need ≥ 2 seeds per side)"
        return verdict
    neutral = 1.0 if comparison.measure == "ratio" else 0.0
    direction = "higher" if effect > neutral else "lower" if effect < neutral else "equal"
    amount = f"×{effect:.4g}" if comparison.measure == "ratio" else f"by {effect:+.4g}"
    bound = "≥" if comparison.high == math.inf else "≤" if comparison.measure == "ratio" and comparison.low == 0 else ""
    if bound:  # a censored boundary: the ratio is a bound, and points one way only past 1
        amount = f"{bound} ×{effect:.4g}"
        if (bound == "≥") != (effect > neutral):
            direction = "either way"
    if p_value >= comparison.alpha or direction == "either way":
        needed = f"; {comparison.seeds_needed} seeds per side for 80% power" if comparison.seeds_needed else ""
        caveat = f"; {comparison.caveat()}" if comparison.caveat() else ""
        verdict["reason"] = f"not significant: {direction} {amount}{detail} (p = {p_value:.3g}){needed}{caveat}"
    elif direction == claim.expect:
        verdict.update(verdict="confirmed", reason=f"{direction} {amount}{detail} (p = {p_value:.3g})")
    else:
        verdict.update(
            verdict="refuted", reason=f"{direction}, not {claim.expect}, {amount}{detail} (p = {p_value:.3g})"
        )
    return verdict


def strict_comparison(comparison):
    return {
        key: (value if not isinstance(value, float) or math.isfinite(value) else None)
        for key, value in comparison.__dict__.items()
    }


def comparison_key(claim, analysis) -> tuple | None:
    """What a claim compares: its test and measure, and the trainings on either side (by training id,
    so that two experiments sharing runs compare the same thing); None without results."""
    if analysis is None or not analysis.trainings:
        return None
    baseline = claim.baseline or analysis.summary["baseline"]
    sides = []
    for name in (claim.variant, baseline):
        if claim.analysis == "point":
            sides.append(analysis.trainings.get(name, frozenset()))
        else:
            sides.append(frozenset().union(*(ids for v, ids in analysis.trainings.items() if holds((v,), name))))
    return (claim.analysis, claim.measured, claim.clip_rate, *sides)


def refuse_repeated_comparisons(claims, analyses, verdicts) -> None:
    """Raises ValueError when two confirmatory claims test the same comparison: the ledger would count
    one piece of evidence twice (and adjust for a test it did not add)."""
    seen = {}
    for claim, verdict in zip(claims, verdicts):
        key = None if verdict["exploratory"] else comparison_key(claim, analyses.get(claim.experiment))
        if key is None or not (key[3] and key[4]):
            continue
        if key in seen:
            raise ValueError(
                f"Claims {seen[key]!r} and {claim.id!r} test the same comparison (the same trainings, test "
                "and measure): keep one, or mark the other `exploratory: true`."
            )
        seen[key] = claim.id


def judge_all(claims, analyses, registrations=None) -> list[dict]:
    """Every claim's verdict, with significance corrected over the confirmatory family at once.

    Judged alone, one in twenty true-null claims would pass at α = 0.05, so a ledger of dozens would
    confirm some by chance. The p-values of the confirmatory claims that could be tested are adjusted
    with Benjamini–Hochberg: among those called confirmed or refuted, the expected share of false ones
    stays below α. Exploratory claims are judged alone, outside the family (`judging.FAMILY`). A
    confirmed stability claim whose arm does not train becomes "stable but does not train".

    Raises:
        ValueError: when two confirmatory claims test the same comparison.
    """
    registrations = registrations or {}
    verdicts = [judge(claim, analyses, registrations.get(claim.id)) for claim in claims]
    refuse_repeated_comparisons(claims, analyses, verdicts)
    tested = [v for v in verdicts if v["comparison"] and v["comparison"]["p_value"] is not None]
    family = [v for v in tested if not v["exploratory"]]
    adjusted = (
        stats.false_discovery_control([v["comparison"]["p_value"] for v in family], method="bh") if family else []
    )
    for verdict, p_adjusted in zip(family, adjusted):
        comparison = verdict["comparison"]
        comparison["p_adjusted"] = float(p_adjusted)
        if p_adjusted < comparison["alpha"]:
            verdict["reason"] += f", adjusted p = {p_adjusted:.3g} over {len(family)} confirmatory claims"
        elif verdict["verdict"] != "inconclusive":
            verdict.update(
                verdict="inconclusive",
                reason=(
                    f"{verdict['reason']} alone, but not over {len(family)} confirmatory claims "
                    f"(adjusted p = {p_adjusted:.3g})"
                ),
            )
    for verdict in tested:
        if verdict["exploratory"]:
            verdict["reason"] += " (judged alone, outside the family)"
        if verdict["verdict"] == "confirmed" and verdict.get("trains") is False:
            verdict.update(
                verdict="stable but does not train", reason=f"{verdict['reason']}; but the arm does not train"
            )
    return verdicts
