"""Results from Python: runs as pandas DataFrames, a report's summary and the claims ledger as typed records.

    from keras_stability import results

    runs = results.load_runs("results/quickstart")  # one row per run and epoch
    steps = results.load_steps("results/quickstart")  # one row per run and training step
    summary = results.read_summary("results/quickstart/report")  # summary.json as a `Summary`
    ledger = results.read_ledger("reports")  # claims.json as a list of `Verdict`
    results.write_event_logs("results/quickstart")  # TensorBoard files for finished runs

Part of the suite (`pip install "keras-stability[suite]"`: pandas, pydantic, SciPy), so not exported
by `keras_stability` itself, whose names need only the library's packages.

Runs are read by the report's own reader (`report.collect`), so a frame holds exactly the runs a
report would see, unfinished ones included (filter on `status`). The JSON files are read into the
report's own records (`Comparison`, `Boundary`, `Tuned`, `Curve`, `Provenance`, ...) by `from_json`.
"""

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pydantic

from keras_stability.config.columns import flat_config
from keras_stability.report.boundary import Boundary
from keras_stability.report.claims import Claim
from keras_stability.report.collect import RunRecord, collect
from keras_stability.report.provenance import Provenance, Registration
from keras_stability.report.statistics import Comparison, Estimate
from keras_stability.report.tradeoff import Curve
from keras_stability.report.tuned import Tuned
from keras_stability.runs.event_log import write_event_logs as write_event_logs  # the suite's Python face

IDENTITY_COLUMNS = (
    "experiment",
    "variant",
    "seed",
    "status",
    "diverged_at_step",
    "nonfinite_steps_total",
    "test_loss",
    "test_accuracy",
)


def run_identity(run: RunRecord) -> dict[str, Any]:
    """The `IDENTITY_COLUMNS` of a run; test scores are NaN and `diverged_at_step` None until known.
    `diverged_at_step` follows the suite's one divergence rule (`RunRecord.diverged_at_step`);
    `nonfinite_steps_total` counts the run's steps whose gradient was not finite, whatever the policy
    did with them (metrics.csv's `nonfinite_steps` column counts them up to each epoch)."""
    test = run.meta.get("test") or {}
    return {
        "experiment": run.experiment,
        "variant": run.variant,
        "seed": run.seed,
        "status": run.status,
        "diverged_at_step": run.diverged_at_step,
        "nonfinite_steps_total": run.nonfinite_steps,
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
    experiments = collect(os.fspath(path)).values()
    return [run for experiment in experiments for runs in experiment.variants.values() for run in runs]


def load_runs(path: str | os.PathLike) -> pd.DataFrame:
    """Every run under `path` (one experiment's results directory, or a results root), one row per
    run and epoch: `IDENTITY_COLUMNS`, the metrics.csv columns, the resolved configuration as
    `config.*` columns (see `flat_config`).

    Raises:
        FileNotFoundError: if `path` holds no run directory.
    """
    return runs_frame(all_runs(path), "metrics")


def load_steps(path: str | os.PathLike) -> pd.DataFrame:
    """As `load_runs`, one row per run and training step: the steps.csv columns instead of metrics.csv's.

    A finished long run's log keeps some of its steps (`runs.step_thinning`): every k-th
    step and each block's peak; its `step` column says which."""
    return runs_frame(all_runs(path), "steps")


def real(value: Any) -> float:
    """A JSON number as a float; `null` (how strict JSON writes NaN and ±inf) reads as NaN."""
    return math.nan if value is None else float(value)


def from_json(kind: Any, data: Any) -> Any:
    """`data`, as the report's strict JSON holds it, as a value of the type `kind`.

    Dataclasses are read field by field (a field absent from `data` takes its default; one without a
    default raises KeyError) and keep the whole object in a `raw` field when they have one; pydantic
    models are validated; `tuple[T, ...]` and `dict[str, T]` are read item by item. `null` reads as
    None where the type allows None, and as NaN where it is a plain `float`.
    """
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if data is None and type(None) in arguments:
            return None
        (kind,) = [argument for argument in arguments if argument is not type(None)]
        return from_json(kind, data)
    if origin is tuple:
        return tuple(from_json(arguments[0], item) for item in data)
    if origin is dict:
        return {key: from_json(arguments[1], value) for key, value in data.items()}
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        values = {
            f.name: from_json(hints[f.name], data[f.name])
            for f in dataclasses.fields(kind)
            if f.name != "raw" and (f.name in data or no_default(f))
        }
        if "raw" in hints:
            values["raw"] = dict(data)
        return kind(**values)
    if isinstance(kind, type) and issubclass(kind, pydantic.BaseModel):
        return kind.model_validate(data)
    if kind is float:
        return real(data)
    if kind is int:
        return int(data)
    return data


def no_default(field_: dataclasses.Field) -> bool:
    return field_.default is dataclasses.MISSING and field_.default_factory is dataclasses.MISSING


def json_file(path: str | os.PathLike, name: str) -> Any:
    """The JSON document at `path`, or at `path/name` when `path` is a directory."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, name)
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


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
    """One variant of a summary.json (`report.summary.summarize_variant`); `trained` is None for a
    dataset without a chance level; `raw` keeps every field, typed here or not."""

    variant: str
    runs: int
    finished: int
    unfinished: tuple[UnfinishedRun, ...]
    diverged: int
    diverged_at_steps: tuple[int | None, ...]
    trained: int | None
    metrics: dict[str, MetricSummary]
    clip_share: Estimate
    grad_norm_max: float
    grad_norm_median: float
    seconds_per_epoch: Estimate
    grad_norm_sampled_every: int = 1  # the median reads every n-th step of long runs (`step_thinning`)
    nonfinite_steps: tuple[int, ...] = ()  # per finished run: steps whose gradient was not finite
    epoch_seconds: tuple[float, ...] = ()  # per finished run: its mean seconds per epoch
    raw: dict = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Summary:
    """A report's summary.json (`report.analyses.as_json`): every variant, every other variant against
    the baseline (`comparisons[variant][metric]`), the stability boundary, tuned comparison and
    threshold curves of each sweep group, and where the runs came from; `raw` keeps every field,
    typed here or not."""

    experiment: str
    trained_rule: str
    description: str
    baseline: str
    variants: dict[str, VariantSummary]
    comparisons: dict[str, dict[str, Comparison]]
    boundaries: tuple[Boundary, ...]
    tuned: tuple[Tuned, ...]
    threshold_curves: tuple[Curve, ...]
    provenance: Provenance
    raw: dict = field(repr=False, default_factory=dict)


def read_summary(path: str | os.PathLike) -> Summary:
    """A report's summary.json (`path` is the file or its report directory) as a `Summary`."""
    return from_json(Summary, json_file(path, "summary.json"))


@dataclass(frozen=True, kw_only=True)
class ClaimComparison(Comparison):
    """The comparison a verdict rests on: against `baseline`, with the Benjamini–Hochberg adjusted
    p-value over the ledger (NaN when the claim could not be tested)."""

    baseline: str
    p_adjusted: float = math.nan


@dataclass(frozen=True)
class Verdict:
    """One entry of the ledger (claims.json, `report.claims.judge_all`): `comparison` is None when
    there was nothing to compare, `registered` None when the claim is not committed; `exploratory`
    with its reason when it was registered after its experiment's first result (or marked so)."""

    claim: Claim
    verdict: str  # one of report.judging.VERDICTS
    reason: str
    comparison: ClaimComparison | None
    registered: Registration | None
    exploratory: bool
    exploratory_reason: str
    trains: bool | None = None  # for a stability claim: whether its arm also trains
    raw: dict = field(repr=False, default_factory=dict)


def read_ledger(path: str | os.PathLike) -> list[Verdict]:
    """The claims ledger (`path` is claims.json or the directory holding it) as a list of `Verdict`."""
    return [from_json(Verdict, entry) for entry in json_file(path, "claims.json")]
