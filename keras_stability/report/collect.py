"""Reading a results directory back into runs, grouped by experiment and variant.

Each run directory goes through `integrity.check_run` (the runner's own check, `run_files.inspect_run`):
a damaged run becomes a `RunRecord` with status "damaged", its `Damage` and no numbers, so it is
listed but never averaged.
"""

import functools
from dataclasses import dataclass, field

import numpy as np

from keras_stability.config.sweep import file_variant
from keras_stability.runs.divergence import EpochEnd, divergence_step
from keras_stability.runs.integrity import check_run
from keras_stability.runs.key import RunKey, find_run_directories
from keras_stability.runs.readers import Damage
from keras_stability.runs.sharpness_log import read_sharpness
from keras_stability.runs.status import FINISHED_STATUSES, RunStatus
from keras_stability.runs.step_thinning import run_stride, sampled


@dataclass
class RunRecord:
    """One run directory: its status, per-epoch metrics and per-step telemetry as arrays."""

    experiment: str
    variant: str
    seed: int
    status: str
    meta: dict
    config: dict
    metrics: dict = field(default_factory=dict)  # column → np.ndarray over epochs
    steps: dict = field(default_factory=dict)  # column → np.ndarray over the steps its log keeps
    damage: Damage | None = None  # set when status is "damaged"
    step_stride: int = 1  # the run's thinning stride (`step_thinning`): 1 when every step is kept
    sharpness: dict = field(default_factory=dict)  # sharpness.csv's columns; {} without `training.sharpness`

    def epoch_values(self, column: str) -> np.ndarray:
        """The per-epoch values of a metrics.csv column; empty when the run has none."""
        return self.metrics.get(column, np.array([]))

    def sampled_steps(self, column: str) -> np.ndarray:
        """A steps.csv column at the steps that sample the run evenly: every step, or every
        `step_stride`-th of a long run (whose compacted log keeps block peaks besides)."""
        values = self.steps.get(column, np.array([]))
        if self.step_stride == 1 or not len(values):
            return values
        return values[sampled(self.steps["step"].astype(int), self.step_stride)]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @functools.cached_property
    def diverged_at_step(self) -> int | None:
        """The step a finished run diverged at under the suite's one rule (`divergence`), also for a
        run trained before it, whose runner judged by its own policy and may have trained on."""
        if not self.finished:
            return None
        steps_per_epoch = int(self.meta.get("steps_per_epoch") or 0)
        columns = ("train_loss", "val_loss", "nonfinite_steps")
        ends = [
            EpochEnd(float(train), float(val), float(nonfinite), epoch * steps_per_epoch)
            for epoch, (train, val, nonfinite) in enumerate(zip(*map(self.epoch_values, columns)), start=1)
        ]
        recorded = self.meta.get("diverged_at_step")
        if recorded is None and self.status == RunStatus.DIVERGED:  # its runner said so without a step
            recorded = max(1, len(ends) * steps_per_epoch)
        return divergence_step(recorded, ends, self.start_loss)

    @property
    def diverged(self) -> bool:
        return self.diverged_at_step is not None

    @property
    def start_loss(self) -> float:
        """The loss of the first step the run's log keeps (step 1 unless a long run's log was thinned)."""
        losses = self.steps.get("loss", np.array([]))
        return float(losses[0]) if len(losses) else 0.0

    @property
    def nonfinite_steps(self) -> int:
        """Steps whose gradient was not finite (skipped, zeroed or applied, by the run's policy)."""
        counts = self.epoch_values("nonfinite_steps")
        return int(counts[-1]) if len(counts) and np.isfinite(counts[-1]) else 0


def read_run(directory: str) -> RunRecord:
    """The run in `directory` (…/<experiment>/<variant>/seed-<n>, a sweep cell's variant two directories
    deep); only its damage when it is damaged."""
    check = check_run(directory)
    if not check.sound:  # config.yaml may be the damage: the names come from the directories
        key = RunKey.parse(directory)
        return RunRecord(key.experiment, key.variant, key.seed, check.status, {}, {}, damage=check.damage)
    document = check.document  # sound: it names the directory it lies in
    return RunRecord(
        document["experiment"],
        document["variant"],
        document["seed"],
        check.status,
        check.meta,
        document["config"],
        check.metrics,
        check.steps,
        step_stride=run_stride(document["config"], check.meta),
        sharpness=read_sharpness(directory),
    )


@dataclass
class ExperimentResults:
    """All runs of one experiment; `variants` lists the baseline first, then the others by name."""

    name: str
    baseline: str
    variants: dict[str, list[RunRecord]]  # sorted by seed
    description: str = ""

    def damaged(self) -> list[RunRecord]:
        return [run for runs in self.variants.values() for run in runs if run.damage is not None]


def collect(root: str) -> dict[str, ExperimentResults]:
    """Every experiment under `root` (a results root or one experiment's directory), by name.

    Raises:
        FileNotFoundError: if `root` holds no run directory.
    """
    directories = find_run_directories(root)
    if not directories:
        raise FileNotFoundError(f"No runs under {root}: expected <experiment>/<variant>/seed-<n>/config.yaml")
    experiments, configured = {}, set()
    for directory in directories:
        run = read_run(directory)
        experiment = experiments.setdefault(run.experiment, ExperimentResults(run.experiment, "", {}))
        if run.config and run.experiment not in configured:  # the experiment's settings, from its first sound run
            configured.add(run.experiment)
            experiment.baseline = run.config.get("baseline") or ""
            experiment.description = run.config.get("description", "")
        experiment.variants.setdefault(run.variant, []).append(run)
    for experiment in experiments.values():
        for runs in experiment.variants.values():
            runs.sort(key=lambda run: run.seed)
        if experiment.baseline not in experiment.variants:  # swept: the baseline's first cell
            cells = [v for v in sorted(experiment.variants) if file_variant(v) == experiment.baseline]
            experiment.baseline = (cells or sorted(experiment.variants))[0]
        rest = sorted(v for v in experiment.variants if v != experiment.baseline)
        experiment.variants = {v: experiment.variants[v] for v in [experiment.baseline, *rest]}
    return experiments
