"""Callbacks that export gradient telemetry while training."""

import csv
import os

import keras


class GradientNormLogger(keras.callbacks.Callback):
    """Writes each variable's gradient norm after every training batch to a CSV file.

    Needs a model built with `stabilize(..., layer_norms=True)` (or compiled with
    `StabilizedOptimizer(..., record_layer_norms=True)`). Columns: `epoch`, `batch`, then one
    per trainable variable, named by its path. With `steps_per_execution > 1` a row is written per
    execution (the last step's norms). The file is flushed per epoch so a crash loses at most one epoch.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self._file = None
        self._writer = None
        self._epoch = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not getattr(self.model.optimizer, "record_layer_norms", False):
            raise ValueError(
                "GradientNormLogger needs per-layer norms: build the model with "
                "stabilize(model, ..., layer_norms=True). "
                f"Received: a model with layer_norms={getattr(self.model, 'layer_norms', None)!r} and "
                f"optimizer {type(self.model.optimizer).__name__}."
            )
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(["epoch", "batch"] + [v.path for v in self.model.trainable_variables])

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        values = self.model.optimizer.layer_norms.numpy()
        self._writer.writerow([self._epoch, batch] + [f"{v:.9g}" for v in values])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._file.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
