"""Whether a rerun reproduced a committed run: its tables compared value by value as float32.

`keras-stability verify` (`cli.verification`) retrains a sample of committed runs and hands each
pair of tables here. The runner writes every float as the shortest text that reads back as the same
float32 (`epoch_record.float32_text`), and that text has changed between versions, so two runs are
compared by their float32 values, never by their bytes. Rows are matched by their epoch (metrics.csv)
or step (the step log): a long run's step log keeps only some steps (`step_thinning`), chosen by
their values, so a rerun that differs may keep other rows, and a row in one table alone is a
difference too. Wall times (timing.csv, meta.json's timings) are not compared.
"""

import dataclasses
import random

import numpy as np

from keras_stability.runs.epoch_record import float32_text

# Provenance that names the machine or the moment, not what decides the numbers.
UNCOMPARED_HOST_KEYS = ("name",)


@dataclasses.dataclass(frozen=True)
class Difference:
    """The first value a rerun did not reproduce.

    Attributes:
        row: the row's epoch (metrics.csv) or step (step log).
        column: the column (its first value column when the row is in one table only).
        committed: the committed value; None when the committed table lacks the row.
        rerun: the rerun's value; None when the rerun lacks the row.
    """

    row: int
    column: str
    committed: float | None
    rerun: float | None


@dataclasses.dataclass(frozen=True)
class TableComparison:
    """One file of a run, committed against rerun.

    Attributes:
        file: the file's name (metrics.csv, steps.csv.gz).
        key: the column rows are matched by ("epoch" or "step").
        rows: rows found in both tables.
        first: the first `Difference` in row order, then column order; None when every value is equal.
        largest: the largest absolute difference over the rows in both tables (inf where one value is
            finite and the other is not); 0.0 when they are equal.
    """

    file: str
    key: str
    rows: int
    first: Difference | None
    largest: float

    @property
    def equal(self) -> bool:
        return self.first is None


@dataclasses.dataclass(frozen=True)
class RunComparison:
    """A rerun of one committed run: its label and its compared files (`problem` when it could not rerun)."""

    label: str
    tables: tuple[TableComparison, ...] = ()
    problem: str | None = None

    @property
    def equal(self) -> bool:
        return self.problem is None and all(table.equal for table in self.tables)

    def line(self) -> str:
        """One line: the label, EQUAL or DIFFERS, the first difference and each file's largest one."""
        if self.problem is not None:
            return f"{self.label}  FAILED  {self.problem}"
        if self.equal:
            counted = ", ".join(f"{table.file} {table.rows} rows" for table in self.tables)
            return f"{self.label}  EQUAL  ({counted}, as float32)"
        first = next(table for table in self.tables if not table.equal)
        largest = ", ".join(f"{table.file} {table.largest:.3g}" for table in self.tables)
        return f"{self.label}  DIFFERS  first: {describe(first)}; largest |difference|: {largest}"


def describe(table: TableComparison) -> str:
    """The first difference of `table` in words: where, and the committed against the rerun value."""
    found = table.first
    where = f"{table.file} {table.key} {found.row}"
    committed = "absent" if found.committed is None else float32_text(found.committed)
    rerun = "absent" if found.rerun is None else float32_text(found.rerun)
    return f"{where} {found.column}: {committed} committed, {rerun} rerun"


def as_float32(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def compare_tables(
    file: str, key: str, committed: dict[str, np.ndarray], rerun: dict[str, np.ndarray]
) -> TableComparison:
    """Compares two tables of one file (as `readers.read_table` reads them) value by value as float32.

    Args:
        file: the file's name, for the report.
        key: the column that numbers the rows (matched between the tables).
        committed: {column: values} of the committed run.
        rerun: {column: values} of the rerun, with the same columns.

    Returns:
        The `TableComparison`.
    """
    if list(committed) != list(rerun):
        raise ValueError(f"{file}: the two tables have other columns. Received: {list(committed)} and {list(rerun)}")
    ours = {int(value): index for index, value in enumerate(committed[key])}
    theirs = {int(value): index for index, value in enumerate(rerun[key])}
    shared = sorted(ours.keys() & theirs.keys())
    columns = [column for column in committed if column != key]
    a = np.array([as_float32(committed[c])[[ours[row] for row in shared]] for c in columns], dtype=np.float32)
    b = np.array([as_float32(rerun[c])[[theirs[row] for row in shared]] for c in columns], dtype=np.float32)
    a, b = a.reshape(len(columns), len(shared)), b.reshape(len(columns), len(shared))
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore", over="ignore"):
        gaps = np.where(same, 0.0, np.abs(a.astype(np.float64) - b.astype(np.float64)))
    gaps = np.where(np.isnan(gaps), np.inf, gaps)  # a NaN against a number
    first = first_difference(shared, columns, a, b, same)
    alone = sorted(ours.keys() ^ theirs.keys())
    if alone and (first is None or alone[0] < first.row):
        row, column = alone[0], next(c for c in columns if c != "epoch")  # a value, not the row's epoch
        value = committed[column][ours[row]] if row in ours else rerun[column][theirs[row]]
        first = Difference(row, column, float(value) if row in ours else None, float(value) if row in theirs else None)
    largest = float(gaps.max()) if gaps.size else 0.0
    return TableComparison(file, key, len(shared), first, largest)


def first_difference(rows, columns, a, b, same) -> Difference | None:
    unequal_rows = np.flatnonzero(~same.all(axis=0))
    if not unequal_rows.size:
        return None
    index = int(unequal_rows[0])
    column = int(np.flatnonzero(~same[:, index])[0])
    return Difference(rows[index], columns[column], float(a[column, index]), float(b[column, index]))


def sample_runs(labels: list[str], count: int, seed: int) -> list[str]:
    """A reproducible random sample of `count` labels (all of them when there are fewer), in sorted order.

    Args:
        labels: the finished runs' labels.
        count: how many to draw.
        seed: the draw's seed: the same labels, count and seed draw the same runs on any machine.

    Returns:
        The drawn labels, sorted.
    """
    ordered = sorted(labels)
    return sorted(random.Random(seed).sample(ordered, min(count, len(ordered))))


def flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def provenance_differences(committed: dict, ours: dict) -> list[str]:
    """The host and version fields on which a committed run's meta.json and this process differ.

    Args:
        committed: the run's meta.json (a run from before the host record grew lacks its new keys).
        ours: this process's `provenance.provenance()`.

    Returns:
        One "field: committed value → our value" line per differing field ("not recorded" for a
        missing one), sorted by field; the host's name is not compared.
    """
    theirs_flat, ours_flat = ({}, {})
    for section in ("host", "versions"):
        theirs_flat.update(flatten(committed.get(section) or {}, f"{section}."))
        ours_flat.update(flatten(ours.get(section) or {}, f"{section}."))
    skipped = {f"host.{key}" for key in UNCOMPARED_HOST_KEYS}
    lines = []
    for field in sorted((theirs_flat.keys() | ours_flat.keys()) - skipped):
        theirs, mine = theirs_flat.get(field, "not recorded"), ours_flat.get(field, "not recorded")
        if theirs != mine:
            lines.append(f"{field}: {theirs} → {mine}")
    return lines
