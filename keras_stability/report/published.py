"""Published results: what a paper reports beside what we measured in its setting, over seeds.

An entry of the claims file's `published:` list names an experiment's variant (a sweep cell such as
`clip_global_norm_1/sequence_length=50,learning_rate=0.03` included), a metric and the published
figure. It carries no verdict: a paper's single number has no interval to test against, so the
table gives our mean with its 95 % t-interval over seeds, how many runs diverged, and where the
published figure falls (`value`, when the paper gives one number; `published` is its words).
"""

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from keras_stability.report.summary import METRICS, SHARPNESS_METRICS

# A claim's or a published result's id: it names the entry in tables and in claims.json.
EntryId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]


class PublishedResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: EntryId
    source: str
    experiment: str
    variant: str
    metric: Literal[(*METRICS, *SHARPNESS_METRICS)]
    published: str
    value: float | None = None


def measure(entry: PublishedResult, analyses: dict) -> dict:
    """The measured side of `entry`: mean, 95 % half-width, seeds, divergences, and the published
    value's place (inside / above / below the interval; None without a value or an interval)."""
    row = {"entry": entry.model_dump(), "mean": None, "ci": None, "n": 0, "diverged": 0, "runs": 0, "excluded": 0}
    analysis = analyses.get(entry.experiment)
    variant = analysis.summary["variants"].get(entry.variant) if analysis else None
    if variant is None:
        row["missing"] = f"no results for {entry.experiment} / {entry.variant}"
        return row
    metric = variant["metrics"].get(entry.metric)
    if metric is None:  # a sharpness metric of runs that did not measure it
        row["missing"] = f"{entry.experiment} / {entry.variant} has no {entry.metric}"
        return row
    finite = [metric[key] if math.isfinite(metric[key]) else None for key in ("mean", "ci")]
    row.update(
        mean=finite[0],
        ci=finite[1],
        n=metric["n"],
        excluded=metric["excluded"],
        diverged=variant["diverged"],
        runs=variant["runs"],
    )
    if entry.value is not None and None not in finite:
        low, high = finite[0] - finite[1], finite[0] + finite[1]
        row["published_is"] = "inside" if low <= entry.value <= high else "above" if entry.value > high else "below"
    return row


def measure_all(entries, analyses) -> list[dict]:
    return [measure(entry, analyses) for entry in entries]


def measured_text(row) -> str:
    if row.get("missing"):
        return row["missing"]
    if row["mean"] is None:
        return f"no finite value (n = {row['n']})"
    interval = "" if row["ci"] is None else f" ± {row['ci']:.4g}"
    return f"{row['mean']:.4g}{interval} (n = {row['n']})"


PUBLISHED_HEADER = (
    "id",
    "experiment / variant",
    "metric",
    "published",
    "measured (mean ± 95 % CI)",
    "diverged",
    "published vs CI",
)


def published_cells(rows) -> list[list[str]]:
    """The published-results table's cells (`PUBLISHED_HEADER`), one row per entry."""
    cells = []
    for row in rows:
        entry = row["entry"]
        excluded = f" ({row['excluded']} diverged left out)" if row["excluded"] else ""
        cells.append(
            [
                entry["id"],
                f"{entry['experiment']} / {entry['variant']}",
                entry["metric"],
                f"{entry['published']} — {entry['source']}",
                measured_text(row) + excluded,
                f"{row['diverged']}/{row['runs']}",
                row.get("published_is", "–"),
            ]
        )
    return cells
