"""The claims ledger: published or folk claims, each judged against an experiment's comparison."""

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from keras_stability.experiments.loading import read_yaml, validate
from keras_stability.report.summary import METRICS, compare

CLAIM_METRICS = tuple(METRICS) + ("divergence_rate",)


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    text: str
    source: str
    experiment: str
    metric: Literal[CLAIM_METRICS]
    variant: str
    baseline: str | None = None
    expect: Literal["higher", "lower"]


class ClaimsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    claims: list[Claim]


def load_claims(path):
    """The claims of a claims YAML file; errors are located like experiment files' (`ConfigError`)."""
    data, marks = read_yaml(path)
    return validate(ClaimsFile, data, [((), marks)]).claims


def judge(claim, summaries):
    """A verdict dict: confirmed / refuted / inconclusive, with the numbers behind it.

    Confirmed: the difference goes the expected way and is significant. Refuted: significant the
    other way. Inconclusive: not significant, or no finished runs to compare.
    """
    verdict = {"claim": claim.model_dump(), "verdict": "inconclusive", "reason": "", "comparison": None}
    summary = summaries.get(claim.experiment)
    if summary is None:
        verdict["reason"] = f"no results for experiment {claim.experiment!r}"
        return verdict
    baseline = claim.baseline or summary["baseline"]
    missing = [name for name in (claim.variant, baseline) if name not in summary["variants"]]
    if missing:
        verdict["reason"] = f"no results for variant {missing[0]!r}"
        return verdict
    comparison = compare(summary["variants"][claim.variant], summary["variants"][baseline])[claim.metric]
    verdict["comparison"] = {**comparison, "baseline": baseline}
    difference, p_value = comparison["difference"], comparison["p_value"]
    if not (math.isfinite(difference) and math.isfinite(p_value)):
        verdict["reason"] = "too few finished runs to test (need ≥ 2 seeds per side)"
        return verdict
    direction = "higher" if difference > 0 else "lower" if difference < 0 else "equal"
    if p_value >= comparison["alpha"]:
        verdict["reason"] = f"not significant: {direction} by {difference:+.4g} (p = {p_value:.3g})"
    elif direction == claim.expect:
        verdict.update(verdict="confirmed", reason=f"{direction} by {difference:+.4g} (p = {p_value:.3g})")
    else:
        verdict.update(verdict="refuted", reason=f"{direction}, not {claim.expect}, by {difference:+.4g} (p = {p_value:.3g})")
    return verdict


def judge_all(claims, summaries):
    """Every claim's verdict, with significance corrected for testing the whole ledger at once.

    Judged alone, one in twenty true-null claims would pass at α = 0.05, so a ledger of dozens would
    confirm some by chance. The p-values of the claims that could be tested are adjusted with
    Benjamini–Hochberg: among the claims called confirmed or refuted, the expected share of false
    ones stays below α. Each comparison keeps its own p-value and gains `p_adjusted`.
    """
    verdicts = [judge(claim, summaries) for claim in claims]
    tested = [v for v in verdicts if v["comparison"] and math.isfinite(v["comparison"]["p_value"])]
    if not tested:
        return verdicts
    adjusted = stats.false_discovery_control([v["comparison"]["p_value"] for v in tested], method="bh")
    for verdict, p_adjusted in zip(tested, adjusted):
        comparison = verdict["comparison"]
        comparison["p_adjusted"] = float(p_adjusted)
        if p_adjusted < comparison["alpha"]:
            verdict["reason"] += f", adjusted p = {p_adjusted:.3g} over {len(tested)} claims"
        elif verdict["verdict"] != "inconclusive":
            verdict.update(
                verdict="inconclusive",
                reason=f"{verdict['reason']} alone, but not over {len(tested)} claims (adjusted p = {p_adjusted:.3g})",
            )
    return verdicts
