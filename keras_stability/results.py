"""Results from Python: runs as pandas DataFrames, a report's summary and the claims ledger as typed records.

    import keras_stability as ks

    runs = ks.load_runs("results/quickstart")          # one row per run and epoch
    steps = ks.load_steps("results/quickstart")        # one row per run and training step
    summary = ks.read_summary("reports/quickstart")    # summary.json as a `Summary`
    ledger = ks.read_ledger("reports")                 # claims.json as a list of `Verdict`

Runs are read by the report's own reader (`report.collect`), so a frame holds exactly the runs a
report would see, unfinished ones included (filter on `status`).
"""

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from keras_stability.report.claims import Claim
from keras_stability.report.collect import RunRecord, collect
from keras_stability.report.statistics import Comparison, Estimate

IDENTITY_COLUMNS = ("experiment", "variant", "seed", "status", "diverged_at_step", "test_loss", "test_accuracy")
CONFIG_PREFIX = "config."


def flat_config(config: Mapping[str, Any], prefix: str = CONFIG_PREFIX) -> dict[str, Any]:
    """A nested configuration as `{"config.optimizer.learning_rate": 0.1, ...}`.

    Mappings become dotted keys; a list (or an empty mapping) becomes its JSON text, e.g.
    `config.model.hidden == "[128, 64]"`: hashable, so frames can group by it, and `json.loads`
    gives the list back. Scalars and `None` stay as they are.
    """
    flat = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple, Mapping)):
            flat[prefix + key] = json.dumps(value)
        else:
            flat[prefix + key] = value
    return flat


def run_identity(run: RunRecord) -> dict[str, Any]:
    """The `IDENTITY_COLUMNS` of a run; test scores are NaN and `diverged_at_step` None until known."""
    test = run.meta.get("test") or {}
    return {
        "experiment": run.experiment,
        "variant": run.variant,
        "seed": run.seed,
        "status": run.status,
        "diverged_at_step": run.meta.get("diverged_at_step"),
        "test_loss": real(test.get("loss")),
        "test_accuracy": real(test.get("accuracy")),
    }


def runs_frame(runs: Iterable[RunRecord], table: str = "metrics") -> pd.DataFrame:
    """One row per entry of each run's `table` ("metrics": epochs, "steps": training steps).

    Columns: `IDENTITY_COLUMNS`, the CSV's columns in file order, then `config.*` (`flat_config`).
    A run without rows yet (stopped before its first epoch ended) adds none.
    """
    if table not in ("metrics", "steps"):
        raise ValueError(f'`table` must be "metrics" or "steps". Received: table={table!r}.')
    frames = []
    for run in runs:
        columns = getattr(run, table)
        if not columns:
            continue
        rows = len(next(iter(columns.values())))
        frames.append(pd.DataFrame({**run_identity(run), **columns, **flat_config(run.config)}, index=range(rows)))
    if not frames:
        return pd.DataFrame(columns=list(IDENTITY_COLUMNS))
    frame = pd.concat(frames, ignore_index=True)
    frame["seed"] = frame["seed"].astype("int64")
    frame["diverged_at_step"] = frame["diverged_at_step"].astype("Int64")  # None → <NA>, a run that did not diverge
    for counter in ("epoch", "step"):
        if counter in frame:
            frame[counter] = frame[counter].astype("int64")
    return frame


def all_runs(path: str | os.PathLike) -> list[RunRecord]:
    return [run for experiment in collect(os.fspath(path)).values() for runs in experiment.variants.values() for run in runs]


def load_runs(path: str | os.PathLike) -> pd.DataFrame:
    """Every run under `path` (one experiment's results directory, or a results root), one row per
    run and epoch: `IDENTITY_COLUMNS`, the metrics.csv columns, the resolved configuration as
    `config.*` columns (see `flat_config`).

    Raises:
        FileNotFoundError: if `path` holds no run directory.
    """
    return runs_frame(all_runs(path), "metrics")


def load_steps(path: str | os.PathLike) -> pd.DataFrame:
    """As `load_runs`, one row per run and training step: the steps.csv columns instead of metrics.csv's."""
    return runs_frame(all_runs(path), "steps")


def real(value: Any) -> float:
    """A JSON number as a float; `null` (and NaN written by older reports) reads as NaN."""
    return math.nan if value is None else float(value)


def json_file(path: str | os.PathLike, name: str) -> Any:
    """The JSON document at `path`, or at `path/name` when `path` is a directory."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, name)
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def estimate(data: Mapping[str, Any]) -> Estimate:
    return Estimate(real(data["mean"]), real(data["ci"]), int(data["n"]))


def comparison(data: Mapping[str, Any]) -> Comparison:
    return Comparison(real(data["difference"]), real(data["ci"]), real(data["p_value"]), data["test"], real(data["alpha"]))


@dataclass(frozen=True)
class MetricSummary(Estimate):
    """A summary metric over a variant's seeds: its estimate, the values behind it, and how many
    diverged runs a loss-kind metric left out."""

    values: tuple[float, ...] = ()
    excluded: int = 0


@dataclass(frozen=True)
class UnfinishedRun:
    seed: int
    status: str


@dataclass(frozen=True)
class VariantSummary:
    """One variant of a summary.json; `raw` keeps every field, typed here or not."""

    variant: str
    runs: int
    finished: int
    diverged: int
    diverged_at_steps: tuple[int | None, ...]
    unfinished: tuple[UnfinishedRun, ...]
    metrics: dict[str, MetricSummary]
    clip_share: Estimate
    grad_norm_max: float
    grad_norm_median: float
    seconds_per_epoch: Estimate
    raw: dict = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Summary:
    """A report's summary.json: every variant, and every other variant against the baseline
    (`comparisons[variant][metric]`); `raw` keeps every field, typed here or not."""

    experiment: str
    description: str
    baseline: str
    variants: dict[str, VariantSummary]
    comparisons: dict[str, dict[str, Comparison]]
    raw: dict = field(repr=False, default_factory=dict)


def variant_summary(data: Mapping[str, Any]) -> VariantSummary:
    metrics = {
        name: MetricSummary(real(m["mean"]), real(m["ci"]), int(m["n"]), tuple(real(v) for v in m["values"]), int(m["excluded"]))
        for name, m in data["metrics"].items()
    }
    return VariantSummary(
        variant=data["variant"],
        runs=int(data["runs"]),
        finished=int(data["finished"]),
        diverged=int(data["diverged"]),
        diverged_at_steps=tuple(data["diverged_at_steps"]),
        unfinished=tuple(UnfinishedRun(int(u["seed"]), u["status"]) for u in data["unfinished"]),
        metrics=metrics,
        clip_share=estimate(data["clip_share"]),
        grad_norm_max=real(data["grad_norm_max"]),
        grad_norm_median=real(data["grad_norm_median"]),
        seconds_per_epoch=estimate(data["seconds_per_epoch"]),
        raw=dict(data),
    )


def read_summary(path: str | os.PathLike) -> Summary:
    """A report's summary.json (`path` is the file or its report directory) as a `Summary`."""
    data = json_file(path, "summary.json")
    return Summary(
        experiment=data["experiment"],
        description=data["description"],
        baseline=data["baseline"],
        variants={name: variant_summary(variant) for name, variant in data["variants"].items()},
        comparisons={
            name: {metric: comparison(c) for metric, c in metrics.items()} for name, metrics in data["comparisons"].items()
        },
        raw=data,
    )


@dataclass(frozen=True, kw_only=True)
class ClaimComparison(Comparison):
    """The comparison a verdict rests on: against `baseline`, with the Benjamini–Hochberg adjusted
    p-value over the ledger (NaN when the claim could not be tested)."""

    baseline: str
    p_adjusted: float = math.nan


@dataclass(frozen=True)
class Verdict:
    """One entry of the ledger (claims.json); `comparison` is None when there was nothing to compare."""

    claim: Claim
    verdict: str  # confirmed / refuted / inconclusive
    reason: str
    comparison: ClaimComparison | None
    raw: dict = field(repr=False, default_factory=dict)


def ledger_entry(data: Mapping[str, Any]) -> Verdict:
    tested = data["comparison"]
    return Verdict(
        claim=Claim.model_validate(data["claim"]),
        verdict=data["verdict"],
        reason=data["reason"],
        comparison=None if tested is None else ClaimComparison(
            **asdict(comparison(tested)), baseline=tested["baseline"], p_adjusted=real(tested.get("p_adjusted"))
        ),
        raw=dict(data),
    )


def read_ledger(path: str | os.PathLike) -> list[Verdict]:
    """The claims ledger (`path` is claims.json or the directory holding it) as a list of `Verdict`."""
    return [ledger_entry(entry) for entry in json_file(path, "claims.json")]
