"""Reading a results directory back into runs, grouped by experiment and variant."""

import csv
import json
import os
from dataclasses import dataclass, field

import numpy as np
import yaml

FINISHED = ("done", "diverged")


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
    steps: dict = field(default_factory=dict)  # column → np.ndarray over steps

    def epoch_values(self, column):
        """The per-epoch values of a metrics.csv column; empty when the run has none."""
        return self.metrics.get(column, np.array([]))

    @property
    def finished(self):
        return self.status in FINISHED

    @property
    def diverged(self):
        return self.status == "diverged"


def read_columns(path):
    """A numeric CSV as {column: float array}; {} when the file does not exist."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    if not rows:
        return {}
    header, data = rows[0], rows[1:]
    return {name: np.array([float(row[i]) for row in data]) for i, name in enumerate(header)}


def read_run(directory):
    with open(os.path.join(directory, "config.yaml"), encoding="utf-8") as stream:
        document = yaml.safe_load(stream)
    meta_path = os.path.join(directory, "meta.json")
    meta = json.load(open(meta_path, encoding="utf-8")) if os.path.exists(meta_path) else {}
    return RunRecord(
        experiment=document["experiment"],
        variant=document["variant"],
        seed=int(document["seed"]),
        status=meta.get("status", "incomplete"),
        meta=meta,
        config=document["config"],
        metrics=read_columns(os.path.join(directory, "metrics.csv")),
        steps=read_columns(os.path.join(directory, "steps.csv")),
    )


@dataclass
class ExperimentResults:
    """All runs of one experiment; `variants` lists the baseline first, then the others by name."""

    name: str
    baseline: str
    variants: dict  # variant → list[RunRecord], sorted by seed
    description: str = ""


def find_run_directories(root):
    found = []
    for directory, _, files in os.walk(root):
        if "config.yaml" in files and os.path.basename(directory).startswith("seed-"):
            found.append(directory)
    return sorted(found)


def collect(root):
    """Every experiment under `root` (a results root or one experiment's directory), by name.

    Raises:
        FileNotFoundError: if `root` holds no run directory.
    """
    directories = find_run_directories(root)
    if not directories:
        raise FileNotFoundError(f"No runs under {root}: expected <experiment>/<variant>/seed-<n>/config.yaml")
    experiments = {}
    for directory in directories:
        run = read_run(directory)
        experiment = experiments.setdefault(
            run.experiment,
            ExperimentResults(run.experiment, run.config.get("baseline") or "", {}, run.config.get("description", "")),
        )
        experiment.variants.setdefault(run.variant, []).append(run)
    for experiment in experiments.values():
        for runs in experiment.variants.values():
            runs.sort(key=lambda run: run.seed)
        if experiment.baseline not in experiment.variants:
            experiment.baseline = sorted(experiment.variants)[0]
        rest = sorted(v for v in experiment.variants if v != experiment.baseline)
        experiment.variants = {v: experiment.variants[v] for v in [experiment.baseline, *rest]}
    return experiments
