"""sharpness.csv: a run's curvature measurements (`training.sharpness`), one row per measurement.

The engine writes a row before the epoch's progress.json, and a resumed run keeps only the rows of
the epochs it keeps (`keep_epochs`), so a crash neither repeats nor loses a measurement.
"""

import os

import numpy as np

from keras_stability.runs import storage

SHARPNESS_FILE = "sharpness.csv"
# `epoch` 0 is the measurement before training; `limit` is the optimizer's stability limit then.
SHARPNESS_COLUMNS = ("epoch", "step", "sharpness", "limit")


def record(directory: str, epoch: int, step: int, values: tuple[float, float]) -> None:
    """Appends one measurement: `values` is (sharpness, limit)."""
    storage.append_csv(os.path.join(directory, SHARPNESS_FILE), SHARPNESS_COLUMNS, [[epoch, step, *values]])


def complete_rows(path: str) -> list[list[float]]:
    """The file's whole rows: a crash during an append can leave the last one cut short."""
    rows = []
    for row in storage.read_csv_rows(path):
        try:
            rows.append([float(value) for value in row])
        except ValueError:
            continue
        if len(rows[-1]) != len(SHARPNESS_COLUMNS) or not rows[-1][0].is_integer():
            rows.pop()
    return rows


def keep_epochs(directory: str, epochs_done: int) -> None:
    """Keeps the whole rows of the epochs up to `epochs_done` (a crash may have cut the next short)."""
    path = os.path.join(directory, SHARPNESS_FILE)
    if os.path.exists(path):
        kept = [[int(row[0]), int(row[1]), *row[2:]] for row in complete_rows(path) if row[0] <= epochs_done]
        storage.atomic_write_csv(path, SHARPNESS_COLUMNS, kept)


def read_sharpness(directory: str) -> dict[str, np.ndarray]:
    """The run's measurements (whole rows), column → array; {} when it measured none."""
    rows = complete_rows(os.path.join(directory, SHARPNESS_FILE))
    if not rows:
        return {}
    table = np.array(rows, dtype=float)
    return {column: table[:, index] for index, column in enumerate(SHARPNESS_COLUMNS)}
