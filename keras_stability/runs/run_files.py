"""Whether a run directory's files are sound, and what they hold: one check for the runner and the report.

`inspect_run` reads a run directory (the layout is in `runner`) and returns `RunFiles`: its state
(new, unfinished, finished or damaged), what it read, and for a damaged run the first `Damage`
found (the file and what is wrong with it). The runner decides on the state: it skips a finished
run, resumes an unfinished one and trains a damaged one again from scratch; the report
(`integrity.check_run`) lists a damaged run and never averages it. Sound means that the files agree
as the runner writes them:

- config.yaml is a mapping naming this directory's experiment, variant and seed; meta.json and
  progress.json are JSON objects whose fields have their types;
- every CSV has exactly its columns (`epoch_record`), a full row of numbers on each line (integers in
  `epoch` and `step`), and ends with the newline the runner writes last;
- metrics.csv and timing.csv hold epochs 1, 2, …; steps.csv holds steps 1, 2, … in epoch order (a
  finished run's steps.csv may be compacted to steps.csv.gz, `step_logs`: it is read as the same
  bytes, and a .gz that is not a whole gzip stream is damage; a long run's .gz keeps only some of
  the steps, as `step_thinning` says);
- a finished run (status in `TERMINAL_STATUSES`) holds exactly the `epochs_done` epochs of its
  meta.json and, where meta.json gives `steps_per_epoch`, that many steps in each;
- an unfinished run is judged by its progress.json, which the runner writes last at each epoch's
  end: the checkpoint it names exists, and the first `csv_sizes` bytes of each CSV hold exactly its
  `epochs_done` epochs. Bytes past `csv_sizes` are an interrupted epoch's appends, which the runner
  cuts off when it resumes: they are neither damage nor read.
"""

import dataclasses
import os
from typing import Literal

import numpy as np

from keras_stability.config.yaml_files import ConfigError, parse_yaml
from keras_stability.runs.epoch_record import METRIC_COLUMNS, STEP_COLUMNS, TIMING_COLUMNS
from keras_stability.runs.key import RunKey
from keras_stability.runs.readers import (
    COMPACT_SUFFIX,
    Damage,
    DamagedFileError,
    read_json_object,
    read_table,
    read_text,
)
from keras_stability.runs.status import TERMINAL_STATUSES
from keras_stability.runs.step_thinning import check_thinned, run_stride

CSV_COLUMNS = {"metrics.csv": METRIC_COLUMNS, "steps.csv": STEP_COLUMNS, "timing.csv": TIMING_COLUMNS}


def is_count(value, least: int) -> bool:
    return type(value) is int and value >= least  # bool is an int subclass, and not a count


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
    csv_sizes: dict[str, int]
    diverged_at_step: int | None = None

    @classmethod
    def from_json(cls, value: dict, path: str) -> "Progress":
        """Raises `DamagedFileError` for `path` unless `value` is a progress.json written by this version."""
        fields = sorted(field.name for field in dataclasses.fields(cls))
        if sorted(value) != fields:
            received = ", ".join(sorted(value))
            raise DamagedFileError(path, f"its keys should be {', '.join(fields)}. Received: {received}")
        progress = cls(**value)
        if not is_count(progress.epochs_done, 1):
            raise DamagedFileError(path, f"epochs_done should be an integer ≥ 1. Received: {progress.epochs_done!r}")
        if not (isinstance(progress.checkpoint, str) and os.path.basename(progress.checkpoint) == progress.checkpoint):
            raise DamagedFileError(path, f"checkpoint should be a file name. Received: {progress.checkpoint!r}")
        sizes = progress.csv_sizes
        if not (
            isinstance(sizes, dict)
            and set(sizes) == set(CSV_COLUMNS)
            and all(is_count(size, 0) for size in sizes.values())
        ):
            names = ", ".join(CSV_COLUMNS)
            raise DamagedFileError(path, f"csv_sizes should give the bytes of {names}. Received: {sizes!r}")
        return progress


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """What `inspect_run` found.

    Attributes:
        state: "new" (no meta.json: nothing trained), "unfinished" (resume after `progress`, or from
            the start if None), "finished" (status in `TERMINAL_STATUSES`) or "damaged".
        document: config.yaml (experiment, variant, seed, config); {} if there is none.
        meta: meta.json's contents.
        progress: the `Progress` to resume from, for unfinished runs.
        tables: each CSV's name → {column: float array}: for an unfinished run, its rows up to
            progress.json's `csv_sizes` ({} before its first epoch is complete).
        damage: for damaged runs, the `Damage` (and every other field is empty).
    """

    state: Literal["new", "unfinished", "finished", "damaged"]
    document: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)
    progress: Progress | None = None
    tables: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    damage: Damage | None = None

    @property
    def damaged_file(self) -> str | None:
        """The damaged file's name within the run directory."""
        return None if self.damage is None else os.path.basename(self.damage.path)

    @property
    def problem(self) -> str | None:
        return None if self.damage is None else self.damage.problem


def inspect_run(directory: str) -> RunFiles:
    """Judges the files of one run directory (see the module docstring); never raises for what it finds."""
    meta_path = os.path.join(directory, "meta.json")
    try:
        meta = read_json_object(meta_path)
        if meta is None and not os.path.exists(os.path.join(directory, "config.yaml")):
            return RunFiles("new")
        document = read_document(directory)
        if meta is None:
            return RunFiles("new", document)
        check_meta(meta_path, meta)
        if meta.get("status") in TERMINAL_STATUSES:
            every = run_stride(document["config"], meta)
            tables = read_tables(directory, meta.get("epochs_done"), "meta.json", meta.get("steps_per_epoch"), every)
            return RunFiles("finished", document, meta, tables=tables)
        # meta.json is written at a run's start and end: while it runs, progress.json says how far it got.
        progress = read_progress(directory)
        if progress is None:
            return RunFiles("unfinished", document, meta)
        tables = read_tables(directory, progress.epochs_done, "progress.json", sizes=progress.csv_sizes)
        return RunFiles("unfinished", document, meta, progress, tables)
    except DamagedFileError as damaged:
        return RunFiles("damaged", damage=damaged.damage)


def read_document(directory: str) -> dict:
    """config.yaml, checked against the directory it lives in (its `RunKey`'s)."""
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
    # A sweep cell's variant (`<variant>/<key=value,...>`) is two directories.
    named = RunKey(document["experiment"], document["variant"], document["seed"]).label.split("/")
    parts = os.path.normpath(os.path.abspath(directory)).split(os.sep)[-len(named) :]
    if parts != named:
        raise DamagedFileError(path, f"it describes {'/'.join(named)}, but lies in {'/'.join(parts)}")
    return document


def check_meta(path: str, meta: dict) -> None:
    if not isinstance(meta.get("status", ""), str):
        raise DamagedFileError(path, f"status should be text. Received: {meta['status']!r}")
    for key, least in (("epochs_done", 0), ("steps_per_epoch", 1)):
        if meta.get(key) is not None and not is_count(meta[key], least):
            raise DamagedFileError(path, f"{key} should be an integer ≥ {least}. Received: {meta[key]!r}")


def read_progress(directory: str) -> Progress | None:
    path = os.path.join(directory, "progress.json")
    value = read_json_object(path)
    if value is None:
        return None
    progress = Progress.from_json(value, path)
    checkpoint = os.path.join(directory, progress.checkpoint)
    if not os.path.isfile(checkpoint):
        raise DamagedFileError(checkpoint, "missing: progress.json names it as the last epoch's checkpoint")
    return progress


def read_tables(
    directory: str,
    epochs: int | None,
    source: str,
    steps_per_epoch: int | None = None,
    every: int = 1,
    sizes: dict[str, int] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Each CSV of the run, checked to hold `epochs` epochs (as `source` says, when it says).

    Args:
        steps_per_epoch: steps that each epoch holds in steps.csv, when known.
        every: the stride a compacted step log may be thinned at (`step_thinning`).
        sizes: progress.json's `csv_sizes`: read each CSV only up to them.
    """
    tables = {}
    for name, columns in CSV_COLUMNS.items():
        path = os.path.join(directory, name)
        path, table = read_table(path, columns, sizes[name] if sizes else None)
        if table is None and epochs:
            raise DamagedFileError(path, f"missing, but {source} says {epochs} epochs are done")
        tables[name] = table or {column: np.array([]) for column in columns}
        check_numbering(path, tables[name], epochs, source, steps_per_epoch, every)
    return tables


def check_numbering(
    path: str,
    table: dict[str, np.ndarray],
    epochs: int | None,
    source: str,
    steps_per_epoch: int | None,
    every: int = 1,
) -> None:
    """A table's rows are epochs 1, 2, …, or steps 1, 2, … in epoch order; `epochs` of them when it is known.

    A compacted step log of a finished run may instead be thinned at `every` (`step_thinning`)."""
    found = table["epoch"]
    if "step" not in table:
        if not np.array_equal(found, np.arange(1, len(found) + 1)):
            raise DamagedFileError(path, "its epochs are not numbered 1, 2, … in order")
        if epochs is not None and len(found) != epochs:
            raise DamagedFileError(path, f"{len(found)} epochs, but {source} says {epochs} are done")
        return
    if not np.array_equal(table["step"], np.arange(1, len(found) + 1)) or np.any(np.diff(found) < 0):
        if every > 1 and epochs and steps_per_epoch and path.endswith(COMPACT_SUFFIX):
            problem = check_thinned(table, every, epochs * steps_per_epoch, steps_per_epoch)
            if problem is None:
                return
            raise DamagedFileError(path, f"its steps are neither 1, 2, … nor a long run's thinned log: {problem}")
        raise DamagedFileError(path, "its steps are not numbered 1, 2, … in epoch order")
    if epochs is None:
        return
    if steps_per_epoch is not None and len(found) != epochs * steps_per_epoch:
        problem = f"{len(found)} steps, but {source} says {epochs} epochs of {steps_per_epoch} are done"
        raise DamagedFileError(path, problem)
    last = int(found[-1]) if len(found) else 0
    if last != epochs:
        raise DamagedFileError(path, f"it ends in epoch {last}, but {source} says {epochs} epochs are done")
    if steps_per_epoch is not None and not np.array_equal(found, np.repeat(np.arange(1, epochs + 1), steps_per_epoch)):
        raise DamagedFileError(path, f"its epochs do not hold {steps_per_epoch} steps each")
