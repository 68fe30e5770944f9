"""One run's directory (`Run`), and an epoch's state saved into it and restored from it.

The layout and the order of the writes are described in `runner`; `save_epoch` commits an epoch with
progress.json last, `restore` puts a resumed run back to the state after its last complete epoch.
"""

import dataclasses
import glob
import os

from keras_stability.experiments import checkpoint
from keras_stability.runs import sharpness_log, step_logs, storage
from keras_stability.runs.key import RunKey
from keras_stability.runs.run_files import CSV_COLUMNS, Progress


class Run:
    """One run's directory."""

    def __init__(self, results_root, config, variant, seed):
        self.config, self.variant, self.seed = config, variant, seed
        self.key = RunKey(config.name, variant, seed)
        self.directory = self.key.directory(results_root)
        self.label = self.key.label

    def path(self, name):
        return os.path.join(self.directory, name)

    def write_meta(self, meta):
        storage.atomic_write_json(self.path("meta.json"), meta)

    def checkpoints(self):
        return sorted(glob.glob(self.path("checkpoint-epoch-*")))

    def discard_training(self):
        """Removes what training wrote (CSVs, progress, checkpoints), to train the run from scratch."""
        trained = (*CSV_COLUMNS, step_logs.COMPACT, sharpness_log.SHARPNESS_FILE, "progress.json")
        for path in [*(self.path(name) for name in trained), *self.checkpoints()]:
            if os.path.exists(path):
                os.unlink(path)


def save_epoch(run, model, record, diverged_at):
    """Appends the epoch's rows, checkpoints the state, then commits both with progress.json.

    None of them is flushed to the disk (`storage.atomic_write_bytes`'s `durable`): the run's
    config.yaml and meta.json are, and what an OS crash could damage here is found on resume."""
    for name, rows in (
        ("metrics.csv", [record.metric_row()]),
        ("steps.csv", record.step_rows()),
        ("timing.csv", [record.timing_row()]),
    ):
        storage.append_csv(run.path(name), CSV_COLUMNS[name], rows)
    name = f"checkpoint-epoch-{record.epoch:04d}.npz"
    checkpoint.save(run.path(name), model)
    sizes = {csv_name: storage.file_size(run.path(csv_name)) for csv_name in CSV_COLUMNS}
    progress = Progress(record.epoch, name, sizes, diverged_at)
    storage.atomic_write_json(run.path("progress.json"), dataclasses.asdict(progress), durable=False)
    for old in run.checkpoints():
        if not old.endswith(name):
            os.unlink(old)


def restore(run, model, progress, log):
    """Puts the model and the CSVs back to the state after `progress`; the progress resumed from, or
    None (the run then starts from scratch) when there is none or its checkpoint is damaged."""
    if progress is not None:
        try:
            checkpoint.load(run.path(progress.checkpoint), model)
        except checkpoint.CheckpointError as error:
            log(f"{run.label}: {error}; training the run again from scratch")
        else:
            for name, size in progress.csv_sizes.items():
                storage.truncate(run.path(name), size)
            sharpness_log.keep_epochs(run.directory, progress.epochs_done)
            log(f"{run.label}: resuming after epoch {progress.epochs_done}")
            return progress
    run.discard_training()
    return None
