"""A run's sharpness telemetry (`training.sharpness`): sharpness.csv, one row per measurement.

Rows are written before the epoch's progress.json, and a resumed run keeps only the rows of the
epochs it keeps (`keep_epochs`), so a crash neither repeats nor loses a measurement. A measurement
reads the weights and changes nothing: a run's other files are the same with it or without it.
"""

import math
import os

import keras

from keras_stability.runs import storage
from keras_stability.sharpness import adam_preconditioner, is_adam, stability_limit, top_hessian_eigenvalue

SHARPNESS_FILE = "sharpness.csv"
SHARPNESS_COLUMNS = ("epoch", "step", "sharpness", "limit")


def measure(model: keras.Model, x, y, settings) -> tuple[float, float]:
    """(sharpness, the optimizer's stability limit) at the current weights and learning rate.

    The limit is NaN for optimizers `stability_limit` has no formula for (Adagrad, RMSprop)."""
    optimizer = model.optimizer
    preconditioner = adam_preconditioner(optimizer, model.trainable_variables) if is_adam(optimizer) else None
    sharpness = top_hessian_eigenvalue(
        model,
        x[: settings.examples],
        y[: settings.examples],
        preconditioner=preconditioner,
        iterations=settings.iterations,
    )
    try:
        limit = float(stability_limit(optimizer))
    except ValueError:
        limit = math.nan
    return float(sharpness), limit


def due(settings, epoch: int) -> bool:
    """Whether the run measures after `epoch` (epoch 0: before training)."""
    return settings is not None and epoch % settings.every_epochs == 0


def record(directory: str, epoch: int, step: int, values: tuple[float, float]) -> None:
    storage.append_csv(os.path.join(directory, SHARPNESS_FILE), SHARPNESS_COLUMNS, [[epoch, step, *values]])


def keep_epochs(directory: str, epochs_done: int) -> None:
    """Drops the rows of epochs after `epochs_done` (written before a crash cut their epoch short)."""
    path = os.path.join(directory, SHARPNESS_FILE)
    if not os.path.exists(path):
        return
    storage.atomic_write_csv(
        path, SHARPNESS_COLUMNS, [row for row in storage.read_csv_rows(path) if int(row[0]) <= epochs_done]
    )
