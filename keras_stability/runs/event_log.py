"""TensorBoard event files for a run, in its `tensorboard/` subdirectory.

`tensorboard --logdir results/<experiment>` shows each run as `<variant>/seed-<n>/tensorboard`:

- `epoch/<column>` at step = epoch: the metrics.csv columns (train_loss, val_accuracy, grad_norm,
  clipped_norm, clip_rate, nonfinite_steps, lr, ...);
- `step/<field>` at the global step: the steps.csv fields (loss, grad_norm, clipped_norm);
- `final/test_loss`, `final/test_accuracy`, `final/diverged` (1 or 0) and, for a diverged run,
  `final/diverged_at_step`, written when the run ends;
- the run as HParams: `experiment`, `variant`, `seed` and its configuration's `config.*` keys as
  `keras_stability.config.columns.flat_config` names them (the experiment-level ones left out), so the
  HParams dashboard lists every run with the last value of each tag as its final metrics.

The event files are a view of the CSVs (a finished run's steps.csv.gz as well, `step_logs`): nothing
reads them to resume or to report. Opening a run's `EventLog` rewrites the directory from the
epochs its CSVs hold, so a resumed run neither repeats nor loses a point; `write_event_logs` does the same for finished runs (made with
`--no-tensorboard`, or committed without their events).
"""

import os
import shutil
import socket
import time
from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf
import yaml
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams.summary_v2 import hparams_pb

from keras_stability.config.columns import flat_config
from keras_stability.runs.epoch_record import METRIC_COLUMNS, STEP_COLUMNS
from keras_stability.runs.key import find_run_directories
from keras_stability.runs.readers import read_table
from keras_stability.runs.storage import read_json

SUBDIRECTORY = "tensorboard"
# The experiment's settings, the same in all its runs (run_identity.EXPERIMENT_LEVEL, and the name).
NOT_HPARAMS = ("config.name", "config.seeds", "config.description", "config.baseline")


def run_hparams(document: Mapping) -> dict[str, bool | int | float | str]:
    """A config.yaml document as HParams values; unset (`null`) settings are left out."""
    flat = {"experiment": document["experiment"], "variant": document["variant"], "seed": int(document["seed"])}
    flat.update(flat_config(document["config"]))
    return {name: value for name, value in flat.items() if value is not None and name not in NOT_HPARAMS}


def scalars_event(step: int, prefix: str, values: Iterable[tuple[str, float]]) -> event_pb2.Event:
    # `simple_value`, TensorBoard's scalar without per-value metadata: a third of the cost of a tensor
    # value, and every TensorBoard reader takes it.
    event = event_pb2.Event(wall_time=time.time(), step=int(step))
    for name, value in values:
        event.summary.value.add(tag=f"{prefix}/{name}", simple_value=float(value))
    return event


class EventLog:
    """Writes one run's event file as the run goes: `write_epoch` after each epoch, `finish` at the end.

    Writes are synchronous, flushed at each epoch's end, and build no TensorFlow op (about 5 µs per
    step; a killed run leaves at most a truncated last record, which TensorBoard skips).

    Args:
        run_directory: the run's directory, with its config.yaml already written.
        epochs_done: the epochs the run's CSVs hold and the run keeps (0 for a fresh run); their
            points are written again from the CSVs, and anything the directory held before is deleted.
    """

    def __init__(self, run_directory: str, epochs_done: int = 0):
        self.run_directory = run_directory
        self.directory = os.path.join(run_directory, SUBDIRECTORY)
        shutil.rmtree(self.directory, ignore_errors=True)
        os.makedirs(self.directory)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        # An event file is a TFRecord file of `Event`s. TensorFlow's writer frames and checksums a
        # record in C++, 30x faster than TensorBoard's pure-Python `RecordWriter`.
        self.writer = tf.io.TFRecordWriter(os.path.join(self.directory, name))
        self.last_epoch = 0
        self.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        with open(os.path.join(run_directory, "config.yaml"), encoding="utf-8") as stream:
            document = yaml.safe_load(stream)
        started = read_json(os.path.join(run_directory, "meta.json"), {}).get("started")
        self.write(
            event_pb2.Event(wall_time=time.time(), summary=hparams_pb(run_hparams(document), start_time_secs=started))
        )
        if epochs_done:
            self.replay(epochs_done)

    def write(self, event: event_pb2.Event) -> None:
        self.writer.write(event.SerializeToString())

    def write_epoch(
        self, epoch: int, metrics: Mapping[str, float], steps: Mapping[str, np.ndarray], first_step: int
    ) -> None:
        """One finished epoch.

        Args:
            epoch: its number, from 1.
            metrics: its metrics.csv values by column (`epoch` excluded).
            steps: its steps by steps.csv field (loss, grad_norm, clipped_norm), equal-length arrays.
            first_step: the global step before the epoch's first step (its steps are numbered from
                `first_step + 1`, as in steps.csv).
        """
        names = list(steps)
        # Python floats in bulk: converting numpy scalars one by one cost a third of the write.
        for offset, row in enumerate(zip(*(np.asarray(values).tolist() for values in steps.values()))):
            self.write(scalars_event(first_step + offset + 1, "step", zip(names, row)))
        self.write(scalars_event(epoch, "epoch", metrics.items()))
        self.writer.flush()
        self.last_epoch = epoch

    def replay(self, epochs_done: int) -> None:
        metrics = read_table(os.path.join(self.run_directory, "metrics.csv"), METRIC_COLUMNS)[1] or {}
        steps = read_table(os.path.join(self.run_directory, "steps.csv"), STEP_COLUMNS)[1] or {}  # or its .gz
        for epoch in range(1, epochs_done + 1):
            row = metrics["epoch"] == epoch
            taken = steps["epoch"] == epoch if steps else np.zeros(0, bool)
            first_step = int(steps["step"][taken][0]) - 1 if taken.any() else 0
            self.write_epoch(
                epoch,
                {name: values[row][0] for name, values in metrics.items() if name != "epoch"},
                {name: values[taken] for name, values in steps.items() if name not in ("epoch", "step")},
                first_step,
            )

    def finish(self, status: str, test: Mapping[str, float] | None = None, diverged_at_step: int | None = None) -> None:
        """The run's outcome (`test`: its test loss and accuracy, None if it has none); closes the file."""
        final = {"diverged": float(status == "diverged")}
        if test:
            final.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
        if diverged_at_step is not None:
            final["diverged_at_step"] = diverged_at_step
        self.write(scalars_event(self.last_epoch, "final", final.items()))
        self.close()

    def close(self) -> None:
        """Closes the file without an outcome (a run that failed or was interrupted)."""
        self.writer.close()


def write_event_logs(path: str) -> list[str]:
    """Writes (or rewrites) the event files of every run under `path` from its CSVs, progress.json and
    meta.json; a run that has not ended (no test scores) gets its epochs and no `final/` tags.

    Returns:
        The run directories written.
    """
    written = []
    for directory in find_run_directories(path):
        progress = read_json(os.path.join(directory, "progress.json"), {"epochs_done": 0})
        meta = read_json(os.path.join(directory, "meta.json"), {})
        log = EventLog(directory, progress["epochs_done"])
        if meta.get("test") is None:
            log.close()
        else:
            log.finish(meta["status"], meta["test"], meta.get("diverged_at_step"))
        written.append(directory)
    return written
