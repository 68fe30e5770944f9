"""Is a run directory's set of files sound? One check, for the report and for the runner.

`check_run` reads a run directory (the layout is in `runner`) and returns a `RunCheck`: what it
read, and the first `Damage` found (the file and what is wrong with it), or none. A damaged run is
never averaged into a report nor skipped as finished: it is retrained. The check is about agreement
between the files as the runner writes them:

- every file parses: config.yaml is a mapping naming this directory's experiment, variant and seed;
  meta.json and progress.json are JSON objects; every CSV has exactly its columns, a full row for
  each line, numbers in every cell, and ends with the newline the runner writes last;
- metrics.csv and timing.csv have one row per epoch, numbered 1, 2, …; steps.csv is in step order;
- a run whose status is final (`FINAL_STATUSES`) has exactly `epochs_done` epochs in its CSVs and,
  when meta.json knows `steps_per_epoch`, that many steps in each; an unfinished run may have one
  epoch more than meta.json records (it was stopped between the two writes), and the checkpoint
  its progress.json names must exist to resume from.
"""

import csv
import json
import os
from dataclasses import dataclass, field

import numpy as np

from keras_stability.experiments.yaml_files import ConfigError, parse_yaml

METRIC_COLUMNS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
    "grad_norm", "clipped_norm", "clip_rate", "nonfinite_steps", "lr",
)
STEP_COLUMNS = ("epoch", "step", "loss", "grad_norm", "clipped_norm")
TIMING_COLUMNS = ("epoch", "seconds")
# Statuses after which the runner writes no more rows: the run is complete as it stands.
FINAL_STATUSES = ("done", "diverged", "pruned")
RERUN_ADVICE = "rerun `keras-stability run <experiment file>`: the runner retrains a damaged run"


@dataclass(frozen=True)
class Damage:
    """A file of a run that cannot be trusted, and why."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class RunCheck:
    """What `check_run` read from a run directory; `damage` is None when the files are sound.

    When damaged, the fields after `directory` hold only what was read before the damage was found.
    """

    directory: str
    document: dict = field(default_factory=dict)  # config.yaml: experiment, variant, seed, config
    meta: dict = field(default_factory=dict)
    metrics: dict[str, np.ndarray] = field(default_factory=dict)  # column → values over epochs
    steps: dict[str, np.ndarray] = field(default_factory=dict)  # column → values over steps
    damage: Damage | None = None

    @property
    def sound(self) -> bool:
        return self.damage is None

    @property
    def status(self) -> str:
        """meta.json's status; "incomplete" before the runner first wrote it; "damaged" when damaged."""
        return "damaged" if self.damage else self.meta.get("status", "incomplete")


class DamagedFileError(Exception):
    def __init__(self, path: str, problem: str):
        super().__init__(path, problem)
        self.damage = Damage(path, problem)


def read_text(path: str) -> str | None:
    """The file's text, None when it does not exist."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DamagedFileError(path, f"cannot be read: {error.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DamagedFileError(path, f"not UTF-8 at byte {error.start}") from None


def read_json_object(path: str) -> dict | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DamagedFileError(path, f"not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    if not isinstance(value, dict):
        raise DamagedFileError(path, f"a JSON object was expected. Received: {type(value).__name__}")
    return value


def read_table(path: str, columns: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """A CSV of numbers written by the runner, as {column: float array}; None when it does not exist."""
    text = read_text(path)
    if text is None:
        return None
    if not text.endswith("\n"):
        raise DamagedFileError(path, "cut short: its last line is incomplete")
    rows = list(csv.reader(text.splitlines()))
    if tuple(rows[0]) != columns:
        raise DamagedFileError(path, f"its columns should be {','.join(columns)}. Received: {','.join(rows[0])}")
    values = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(columns):
            raise DamagedFileError(path, f"line {number} has {len(row)} fields, not {len(columns)}")
        try:
            values.append([float(cell) for cell in row])
        except ValueError:
            raise DamagedFileError(path, f"line {number} holds something other than numbers: {','.join(row)}") from None
    table = np.array(values, dtype=np.float64).reshape(len(values), len(columns))
    return {name: table[:, index] for index, name in enumerate(columns)}


def read_document(directory: str) -> dict:
    """config.yaml, checked against the directory it lives in (results/<experiment>/<variant>/seed-<n>)."""
    path = os.path.join(directory, "config.yaml")
    text = read_text(path)
    if text is None:
        raise DamagedFileError(path, "missing")
    try:
        document = parse_yaml(text, path)[0]
    except ConfigError as error:
        raise DamagedFileError(path, error.problems[0].message) from None
    keys = {"experiment": str, "variant": str, "seed": int, "config": dict}
    if not isinstance(document, dict) or any(not isinstance(document.get(k), kind) for k, kind in keys.items()):
        raise DamagedFileError(path, "a mapping of experiment, variant, seed and config was expected")
    parts = os.path.normpath(os.path.abspath(directory)).split(os.sep)[-3:]
    named = [document["experiment"], document["variant"], f"seed-{document['seed']}"]
    if parts != named:
        raise DamagedFileError(path, f"it describes {'/'.join(named)}, but lies in {'/'.join(parts)}")
    return document


def check_epochs(path: str, epochs: np.ndarray, expected: int | None, final: bool) -> None:
    """A per-epoch table's rows are epochs 1, 2, …, as many as meta.json says (one more while unfinished)."""
    if not np.array_equal(epochs, np.arange(1, len(epochs) + 1)):
        raise DamagedFileError(path, "its epochs are not numbered 1, 2, … in order")
    if expected is not None and not (len(epochs) == expected or (not final and len(epochs) == expected + 1)):
        raise DamagedFileError(path, f"{len(epochs)} epochs, but meta.json says {expected} are done")


def check_steps(path: str, steps: dict[str, np.ndarray], meta: dict, final: bool) -> None:
    epochs, numbers = steps["epoch"], steps["step"]
    if np.any(np.diff(epochs) < 0) or np.any(np.diff(numbers) <= 0):
        raise DamagedFileError(path, "its rows are not in step order")
    expected, per_epoch = meta.get("epochs_done"), meta.get("steps_per_epoch")
    if not final or expected is None:
        return
    if len(epochs) and epochs[-1] != expected:
        raise DamagedFileError(path, f"it ends in epoch {epochs[-1]:g}, but meta.json says {expected} epochs are done")
    if isinstance(per_epoch, int) and len(epochs) != expected * per_epoch:
        raise DamagedFileError(path, f"{len(epochs)} steps, but meta.json says {expected} epochs of {per_epoch} are done")


def check_meta(path: str, meta: dict) -> None:
    if not isinstance(meta.get("status", ""), str):
        raise DamagedFileError(path, f"status should be text. Received: {meta['status']!r}")
    done = meta.get("epochs_done")
    if done is not None and (isinstance(done, bool) or not isinstance(done, int) or done < 0):
        raise DamagedFileError(path, f"epochs_done should be an integer ≥ 0. Received: {done!r}")


def check_progress(directory: str, epochs_written: int) -> None:
    """An unfinished run resumes from progress.json: its epoch must be written and its checkpoint there."""
    path = os.path.join(directory, "progress.json")
    progress = read_json_object(path)
    if progress is None:
        return
    done, checkpoint = progress.get("epochs_done"), progress.get("checkpoint")
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        raise DamagedFileError(path, f"epochs_done should be an integer ≥ 0. Received: {done!r}")
    if done > epochs_written:
        raise DamagedFileError(path, f"it resumes after epoch {done}, but metrics.csv holds {epochs_written}")
    if done and not (isinstance(checkpoint, str) and os.path.isfile(os.path.join(directory, checkpoint))):
        raise DamagedFileError(path, f"the checkpoint it resumes from is missing: {checkpoint!r}")


def check_run(directory: str) -> RunCheck:
    """Reads a run directory and checks that its files agree (see the module docstring).

    Returns:
        A `RunCheck`: the parsed config.yaml, meta.json, metrics.csv and steps.csv, and the first
        `Damage` found (None when the run is sound).
    """
    read = {}
    try:
        read["document"] = read_document(directory)
        meta_path = os.path.join(directory, "meta.json")
        read["meta"] = meta = read_json_object(meta_path) or {}
        check_meta(meta_path, meta)
        final = meta.get("status") in FINAL_STATUSES
        expected = meta.get("epochs_done")
        tables = {}
        for name, columns in (("metrics.csv", METRIC_COLUMNS), ("timing.csv", TIMING_COLUMNS), ("steps.csv", STEP_COLUMNS)):
            path = os.path.join(directory, name)
            table = read_table(path, columns)
            if table is None and expected:
                raise DamagedFileError(path, f"missing, but meta.json says {expected} epochs are done")
            tables[name] = table or {column: np.array([]) for column in columns}
            if name != "steps.csv":
                check_epochs(path, tables[name]["epoch"], expected, final)
        check_steps(os.path.join(directory, "steps.csv"), tables["steps.csv"], meta, final)
        read.update(metrics=tables["metrics.csv"], steps=tables["steps.csv"])
        if not final:
            check_progress(directory, len(tables["metrics.csv"]["epoch"]))
    except DamagedFileError as damaged:
        return RunCheck(directory, **read, damage=damaged.damage)
    return RunCheck(directory, **read)
