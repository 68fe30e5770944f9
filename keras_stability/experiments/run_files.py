"""Whether a run directory's files are sound: finished, resumable, new, or damaged (and which file).

`inspect_run` is what `run` decides on: a finished run is skipped only if its metrics.csv and
steps.csv hold exactly the epochs and steps its meta.json reports, an unfinished one resumes only
from a readable progress.json whose checkpoint and CSV rows are all there. Anything else is damage,
named by file, and the runner trains that run again from scratch rather than trust it.
"""

import csv
import dataclasses
import json
import os
from typing import Literal

import yaml

from keras_stability.experiments.epoch_record import METRIC_COLUMNS, STEP_COLUMNS, TIMING_COLUMNS

# A run in one of these states is not trained again.
TERMINAL_STATUSES = ("done", "diverged", "pruned")
CSV_COLUMNS = {"metrics.csv": METRIC_COLUMNS, "steps.csv": STEP_COLUMNS, "timing.csv": TIMING_COLUMNS}


class Damage(ValueError):
    """A run file that cannot be trusted: `file` names it, the message says why."""

    def __init__(self, file, problem):
        super().__init__(problem)
        self.file, self.problem = file, problem


@dataclasses.dataclass(frozen=True)
class Progress:
    """progress.json: the last epoch whose files are complete, written last at each epoch's end.

    Attributes:
        epochs_done: epochs trained.
        checkpoint: the checkpoint file holding the state after `epochs_done`.
        csv_sizes: bytes of each CSV after that epoch's rows (appends past them are cut on resume).
        diverged_at_step: the step the run diverged at, if it has.
    """

    epochs_done: int
    checkpoint: str
    csv_sizes: dict
    diverged_at_step: int | None = None

    @classmethod
    def from_json(cls, value):
        """Raises `Damage` unless `value` is a progress.json written by this version."""
        fields = {field.name for field in dataclasses.fields(cls)}
        if not isinstance(value, dict) or set(value) != fields:
            raise Damage("progress.json", f"expected the keys {sorted(fields)}")
        progress = cls(**value)
        if not (isinstance(progress.epochs_done, int) and progress.epochs_done >= 1):
            raise Damage("progress.json", f"epochs_done must be an integer ≥ 1, not {progress.epochs_done!r}")
        if not (isinstance(progress.checkpoint, str) and os.path.basename(progress.checkpoint) == progress.checkpoint):
            raise Damage("progress.json", f"checkpoint must be a file name, not {progress.checkpoint!r}")
        if not (isinstance(progress.csv_sizes, dict) and set(progress.csv_sizes) == set(CSV_COLUMNS)
                and all(isinstance(size, int) for size in progress.csv_sizes.values())):
            raise Damage("progress.json", f"csv_sizes must give the bytes of {', '.join(CSV_COLUMNS)}")
        return progress


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """What `inspect_run` found.

    Attributes:
        state: "new" (nothing trained), "unfinished" (resume after `progress`, or from the start if
            None), "finished" (status in TERMINAL_STATUSES and files that agree), or "damaged".
        meta: meta.json's contents ({} if new or damaged).
        progress: the `Progress` to resume from, for unfinished runs.
        damaged_file, problem: for damaged runs, which file and what is wrong with it.
    """

    state: Literal["new", "unfinished", "finished", "damaged"]
    meta: dict = dataclasses.field(default_factory=dict)
    progress: Progress | None = None
    damaged_file: str | None = None
    problem: str | None = None


def inspect_run(directory: str) -> RunFiles:
    """Judges the files of one run directory (it never raises for what it finds in them)."""
    try:
        meta = read_meta(directory)
        if meta is None:
            return RunFiles("new")
        read_config(directory)
        if meta.get("status") in TERMINAL_STATUSES:
            check_finished(directory, meta)
            return RunFiles("finished", meta)
        return RunFiles("unfinished", meta, read_progress(directory))
    except Damage as damage:
        return RunFiles("damaged", damaged_file=damage.file, problem=damage.problem)


def load_json(directory, name):
    try:
        with open(os.path.join(directory, name), encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Damage(name, f"not readable as JSON ({type(error).__name__}: {error})") from None


def read_meta(directory):
    meta = load_json(directory, "meta.json")
    if meta is not None and not isinstance(meta, dict):
        raise Damage("meta.json", f"expected a JSON object, found {type(meta).__name__}")
    return meta


def read_config(directory):
    try:
        with open(os.path.join(directory, "config.yaml"), encoding="utf-8") as stream:
            document = yaml.safe_load(stream)
    except FileNotFoundError:
        raise Damage("config.yaml", "missing beside meta.json") from None
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise Damage("config.yaml", f"not readable as YAML ({type(error).__name__})") from None
    if not (isinstance(document, dict) and isinstance(document.get("config"), dict)):
        raise Damage("config.yaml", "expected a mapping with a `config` section")


def read_progress(directory):
    value = load_json(directory, "progress.json")
    if value is None:
        return None
    progress = Progress.from_json(value)
    if not os.path.isfile(os.path.join(directory, progress.checkpoint)):
        raise Damage(progress.checkpoint, "missing: progress.json names it as the last epoch's checkpoint")
    for name, size in progress.csv_sizes.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path) or os.path.getsize(path) < size:
            raise Damage(name, f"shorter than the {size} bytes recorded after epoch {progress.epochs_done}")
        with open(path, "rb") as stream:
            head = stream.read(size).decode("utf-8", errors="replace")
        check_rows(name, list(csv.reader(head.splitlines())), progress.epochs_done, None)
    return progress


def check_finished(directory, meta):
    epochs, steps_per_epoch = meta.get("epochs_done"), meta.get("steps_per_epoch")
    if not (isinstance(epochs, int) and epochs >= 1 and isinstance(steps_per_epoch, int) and steps_per_epoch >= 1):
        raise Damage("meta.json", f"status {meta.get('status')!r} without valid epochs_done and steps_per_epoch")
    for name in ("metrics.csv", "steps.csv"):
        try:
            with open(os.path.join(directory, name), newline="", encoding="utf-8") as stream:
                rows = list(csv.reader(stream))
        except FileNotFoundError:
            raise Damage(name, f"missing from a run meta.json calls {meta['status']!r}") from None
        except (OSError, ValueError) as error:
            raise Damage(name, f"not readable ({type(error).__name__})") from None
        check_rows(name, rows, epochs, steps_per_epoch if name == "steps.csv" else None)


def check_rows(name, rows, epochs, steps_per_epoch):
    """Raises `Damage` unless `rows` (header first) hold `epochs` epochs of whole, numeric rows.

    steps.csv holds `steps_per_epoch` rows per epoch when that is given, numbered from 1 on.
    """
    columns = CSV_COLUMNS[name]
    if not rows or tuple(rows[0]) != columns:
        raise Damage(name, f"its header is not {','.join(columns)}")
    data = rows[1:]
    expected = epochs * steps_per_epoch if steps_per_epoch else None
    for number, row in enumerate(data, start=2):
        if len(row) != len(columns):
            raise Damage(name, f"line {number} has {len(row)} fields, not {len(columns)}")
        try:
            [int(field) for field in row[: 2 if name == "steps.csv" else 1]]
            [float(field) for field in row]
        except ValueError:
            raise Damage(name, f"line {number} holds a field that is not a number of its column's kind") from None
    epochs_found = [int(row[0]) for row in data]
    if name == "steps.csv":
        if expected is not None and len(data) != expected:
            raise Damage(name, f"{len(data)} step rows where meta.json reports {epochs} epochs of {steps_per_epoch}")
        steps = [int(row[1]) for row in data]
        numbered = steps == list(range(1, len(data) + 1)) and epochs_found == sorted(epochs_found)
        if not numbered or epochs_found[-1:] != [epochs]:
            raise Damage(name, f"its steps are not numbered 1 to {len(data)} through epoch {epochs}")
    elif epochs_found != list(range(1, epochs + 1)):
        raise Damage(name, f"its epochs are not 1 to {epochs}")
