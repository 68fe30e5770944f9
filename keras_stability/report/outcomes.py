"""Runs reduced to the outcomes the analyses compare, and grouped by the settings a sweep varies.

Every setting is read from a run's resolved configuration (`RunRecord.config`), never from directory
or variant names: two runs belong to one sweep of a setting when their dataset, model, optimizer,
stabilizer and training agree in everything but that setting.
"""

import json
import math
from dataclasses import dataclass

import numpy as np

from keras_stability.config.sweep import file_variant
from keras_stability.report.collect import RunRecord

# The sections that define a training (experiment-level keys such as seeds or baseline do not).
IDENTITY = ("dataset", "model", "optimizer", "stabilizer", "training")
LEARNING_RATE = "optimizer.learning_rate"
# The classes of the built-in classification datasets, for runs whose meta.json predates `num_classes`
# (the runner records the task's own count since the third edition); `dataset.classes` keeps a subset.
BUILT_IN_CLASSES = {"mnist_small": 10, "mnist": 10, "fashion_mnist": 10, "zipf_tokens": 2}
TRAINED_MARGIN = 0.1
TRAINED_RULE = (
    f"did not diverge and reached a test accuracy of at least chance + {TRAINED_MARGIN} "
    "(chance: 1 / the task's number of classes)"
)


@dataclass(frozen=True)
class Outcome:
    """What one finished run came to: diverged or not, trained or not (None: no chance level to
    compare with), its best validation and its test accuracy (0 for a diverged run), the share of
    its steps clipped (None without telemetry), and its resolved configuration."""

    variant: str
    seed: int
    config: dict
    diverged: bool
    trained: bool | None
    best_val_accuracy: float
    test_accuracy: float
    clip_share: float | None


def score(value, diverged):
    """An accuracy as compared: a diverged run failed and scores 0 when its value is not finite."""
    return 0.0 if diverged and not math.isfinite(value) else value


def outcome_of(run: RunRecord) -> Outcome:
    val = run.epoch_values("val_accuracy")
    val = val[np.isfinite(val)] if len(val) else val
    test = score(float(run.meta.get("test", {}).get("accuracy", math.nan)), run.diverged)
    chance = chance_accuracy(run)
    clip = run.epoch_values("clip_rate")
    return Outcome(
        variant=run.variant,
        seed=run.seed,
        config=run.config,
        diverged=run.diverged,
        trained=None if chance is None else bool(not run.diverged and test >= chance + TRAINED_MARGIN),
        best_val_accuracy=score(float(val.max()) if len(val) else math.nan, run.diverged),
        test_accuracy=test,
        clip_share=float(np.mean(clip)) if len(clip) else None,
    )


def chance_accuracy(run: RunRecord) -> float | None:
    """1 / the number of classes of the run's task; None for a task without classes (regression).

    >>> chance_accuracy(RunRecord("x", "v", 0, "done", {}, {"dataset": {"name": "mnist_small", "classes": [4, 9]}}))
    0.5
    """
    classes = run.meta.get("num_classes") if "num_classes" in run.meta else None
    if classes is None and "num_classes" not in run.meta:
        kept = setting(run.config, "dataset.classes")
        classes = len(kept) if kept else BUILT_IN_CLASSES.get(setting(run.config, "dataset.name"))
    return 1 / classes if classes else None


def outcomes_of(experiment) -> list[Outcome]:
    """The outcomes of an experiment's finished runs (unfinished runs are no evidence)."""
    return [outcome_of(run) for runs in experiment.variants.values() for run in runs if run.finished]


def setting(config, path):
    """The value at a dotted path ("stabilizer.transforms.0.max_norm"); None where there is none."""
    value = config
    for key in path.split("."):
        if isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            return None
    return value


def without(config, path):
    """The identity sections of `config` with the setting at `path` removed, as a comparable key."""
    identity = json.loads(json.dumps({section: config.get(section) for section in IDENTITY}))
    *parents, last = path.split(".")
    holder = identity
    for key in parents:
        holder = holder[int(key)] if isinstance(holder, list) else holder.get(key) if isinstance(holder, dict) else None
        if holder is None:
            break
    if isinstance(holder, dict):
        holder.pop(last, None)
    return json.dumps(identity, sort_keys=True)


@dataclass(frozen=True)
class SweepGroup:
    """Outcomes that differ only in one setting; `label` names it by its variants."""

    label: str
    variants: tuple[str, ...]
    outcomes: tuple[Outcome, ...]

    def values(self, path):
        return sorted({setting(o.config, path) for o in self.outcomes})

    def at(self, path, value):
        return [o for o in self.outcomes if setting(o.config, path) == value]


def sweep_groups(outcomes, path, baseline="") -> list[SweepGroup]:
    """Outcomes with a value at `path`, grouped by everything else that defines their training.

    A group of one file variant (one variant, or one variant's sweep cells) is labelled by it; a group
    of several (a sweep written as one variant per value) by `baseline` when it holds it, else by its
    variants joined with " + ".
    """
    groups = {}
    for outcome in outcomes:
        if isinstance(setting(outcome.config, path), (int, float)):
            groups.setdefault(without(outcome.config, path), []).append(outcome)
    result = []
    for members in groups.values():
        variants = tuple(dict.fromkeys(o.variant for o in members))
        files = tuple(dict.fromkeys(map(file_variant, variants)))  # a sweep's cells are one file variant
        label = files[0] if len(files) == 1 else baseline if baseline in files else " + ".join(sorted(files))
        result.append(SweepGroup(label, variants, tuple(members)))
    return sorted(result, key=lambda group: (group.label != baseline, group.label))


def holds(variants, variant) -> bool:
    """Whether `variants` (run variants) include `variant`, or sweep cells of the file's `variant`."""
    return variant in variants or any(file_variant(name) == variant for name in variants)


def group_of(groups, variant):
    """The group holding runs of `variant`; None when there is none."""
    return next((group for group in groups if holds(group.variants, variant)), None)
