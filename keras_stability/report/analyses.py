"""One experiment analysed: its summary over seeds, stability boundaries, tuned comparison, threshold
trade-off and provenance — the record the report renders and the claims are judged against."""

import dataclasses
import math
from dataclasses import dataclass

from keras_stability.report.boundary import Boundary, boundary
from keras_stability.report.outcomes import LEARNING_RATE, outcomes_of, sweep_groups
from keras_stability.report.provenance import Provenance, provenance
from keras_stability.report.summary import summarize
from keras_stability.report.tradeoff import Curve, curves
from keras_stability.report.tuned import Tuned, tune


@dataclass(frozen=True)
class ExperimentAnalysis:
    """Everything the report says about one experiment. `boundaries` and `tuned` hold every group of
    runs that differ only in the learning rate; `swept` tells whether any of them tried more than one."""

    name: str
    summary: dict
    boundaries: tuple[Boundary, ...]
    tuned: tuple[Tuned, ...]
    curves: tuple[Curve, ...]
    provenance: Provenance
    trainings: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)  # variant → training ids

    @property
    def swept(self) -> bool:
        return any(len(b.cells) > 1 for b in self.boundaries)

    @property
    def thresholds_swept(self) -> bool:
        return any(len(c.points) > 1 for c in self.curves)


def analyse(experiment) -> ExperimentAnalysis:
    outcomes = outcomes_of(experiment)
    groups = sweep_groups(outcomes, LEARNING_RATE, experiment.baseline)
    return ExperimentAnalysis(
        name=experiment.name,
        summary=summarize(experiment),
        boundaries=tuple(boundary(group) for group in groups),
        tuned=tuple(tune(group) for group in groups),
        curves=tuple(curves(outcomes, experiment.baseline)),
        provenance=provenance(experiment),
        trainings={
            variant: frozenset(run.meta["training_id"] for run in runs if run.finished and run.meta.get("training_id"))
            for variant, runs in experiment.variants.items()
        },
    )


def strict(data):
    """Plain JSON data with null for every non-finite number (strict parsers reject NaN and Infinity)."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return strict(dataclasses.asdict(data))
    if isinstance(data, dict):
        return {str(key): strict(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict(value) for value in data]
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if hasattr(data, "item"):  # numpy scalars
        return strict(data.item())
    return data


def as_json(analysis: ExperimentAnalysis) -> dict:
    """summary.json: the summary, with the analyses and provenance beside it."""
    return strict(
        {
            **analysis.summary,
            "boundaries": analysis.boundaries,
            "tuned": analysis.tuned,
            "threshold_curves": analysis.curves,
            "provenance": analysis.provenance,
        }
    )
