"""`EpochRecord`: one trained epoch's numbers, and their rows in metrics.csv, steps.csv and timing.csv."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class EpochMetrics:
    """An epoch's row of metrics.csv, in column order (the columns are these fields' names)."""

    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    grad_norm: float
    clipped_norm: float
    clip_rate: float
    nonfinite_steps: float
    lr: float


METRIC_COLUMNS = ("epoch",) + tuple(field.name for field in dataclasses.fields(EpochMetrics))
# Written out rather than built from step_log.STEP_FIELDS: reading results must not import TensorFlow
# (tests/runs/test_integrity.py ties the two).
STEP_COLUMNS = ("epoch", "step", "loss", "grad_norm", "clipped_norm")
TIMING_COLUMNS = ("epoch", "seconds")


def float32_text(value: float) -> str:
    """Shortest text that reads back as the same float32 (`nan`, `inf` included), also when read as a
    Python float or float64 first, as CSV readers do: at most 9 significant digits, where the float64
    of the value would print 17 (a step log's rows take 40 % fewer bytes, compressed too)."""
    return str(np.float32(value))


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """Everything one epoch adds to a run's files.

    Attributes:
        epoch: 1-based epoch number.
        first_step: steps trained before this epoch (its steps are numbered from first_step + 1).
        metrics: the epoch's `EpochMetrics`.
        steps: the epoch's step rows, an (n, len(STEP_FIELDS)) array from the model's `StepLog`.
        seconds: wall time of the epoch (training and validation).
    """

    epoch: int
    first_step: int
    metrics: EpochMetrics
    steps: np.ndarray
    seconds: float

    def metric_row(self) -> list:
        return [self.epoch, *map(float32_text, dataclasses.astuple(self.metrics))]

    def step_rows(self) -> list[list]:
        return [[self.epoch, self.first_step + i + 1, *map(float32_text, row)] for i, row in enumerate(self.steps)]

    def timing_row(self) -> list:
        return [self.epoch, f"{self.seconds:.3f}"]

    def summary(self) -> str:
        m = self.metrics
        return (
            f"loss {m.train_loss:.4f}  val_accuracy {m.val_accuracy:.4f}  grad_norm {m.grad_norm:.3g}  "
            f"clip_rate {m.clip_rate:.2f}  ({self.seconds:.3f}s)"
        )
