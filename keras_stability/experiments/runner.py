"""Running one (experiment, variant, seed): deterministic, resumable, crash-safe.

Layout of `results/<experiment>/<variant>/seed-<n>/`:

- `config.yaml`   the fully resolved run configuration;
- `meta.json`     status (running / done / diverged / pruned / failed), provenance, timings, test scores;
- `metrics.csv`   one row per epoch, `METRIC_COLUMNS` (deterministic: no wall time);
- `steps.csv`     one row per training step, `STEP_COLUMNS`; once the run has finished,
  `steps.csv.gz`, gzip of the same bytes (`step_logs`);
- `timing.csv`    seconds per epoch (wall time, so it differs between identical runs);
- `sharpness.csv` with `training.sharpness` only: the loss Hessian's top eigenvalue against the
  optimizer's stability limit, before training and after every `every_epochs` epochs (`curvature`, `sharpness_log`);
- `checkpoint-epoch-<k>.npz` and `progress.json`: the last completed epoch, for resuming (the
  checkpoint is deleted once the run has finished).

The CSVs grow by appending each epoch's rows; every other file is replaced atomically.
`progress.json` is written last at each epoch end and records the CSVs' sizes, so a run killed at
any moment resumes from a consistent epoch (rows appended after it are cut off) and ends with the
same bytes as an uninterrupted run. Damaged files are found by `run_files.inspect_run`.
"""

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_stability.config.schema import RunConfig
from keras_stability.epoch_loop import train_epoch
from keras_stability.experiments import curvature
from keras_stability.experiments.evaluation import evaluate_arrays
from keras_stability.experiments.run_cache import model_for_run, splits_for_run
from keras_stability.experiments.run_directory import Run, restore, save_epoch
from keras_stability.experiments.run_errors import RunInterrupted, epochs_saved, failure, failure_line
from keras_stability.experiments.training import distribution_strategy, epoch_dataset, nonfinite_policy
from keras_stability.factories import factory_provenance
from keras_stability.nonfinite import nonfinite_errors
from keras_stability.runs import run_store, sharpness_log, step_logs, storage
from keras_stability.runs.divergence import EpochEnd, first_divergent_step
from keras_stability.runs.epoch_record import METRIC_COLUMNS, STEP_COLUMNS, EpochMetrics, EpochRecord
from keras_stability.runs.event_log import EventLog
from keras_stability.runs.provenance import provenance
from keras_stability.runs.run_files import TERMINAL_STATUSES, RunFiles, inspect_run
from keras_stability.runs.run_identity import resolved_config_text
from keras_stability.runs.run_reuse import judge
from keras_stability.runs.status import RunStatus
from keras_stability.step_log import STEP_FIELDS

__all__ = ["METRIC_COLUMNS", "STEP_COLUMNS", "TERMINAL_STATUSES", "fit_epoch", "run_one"]


def configure_determinism(seed):
    """Seeds what a run draws from, and makes TensorFlow's kernels deterministic.

    Keras draws each initializer's and dropout layer's seed from Python's `random` when the layer is
    built; NumPy is seeded as `keras.utils.set_random_seed` seeds it. TensorFlow's global seed is
    left alone: setting it clears TensorFlow's kernel cache (the eager context's global-seed setter), which
    made every run re-instantiate its traced epoch and evaluation functions (0.3–0.8 s a run on the
    doc-002 MLP), and nothing a run trains reads it (Keras 3 draws stateless random numbers from
    explicit seeds; with op determinism on, a random op that needed it would fail, not vary).
    """
    random.seed(seed)
    np.random.seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclasses.dataclass
class RunState:
    """A run under training: where it is written, what trains it, how far it has got.

    Attributes:
        run: the run's directory (`Run`).
        model: its compiled `StabilizedModel`, restored to the end of epoch `epochs_done`.
        data: its dataset splits on the device (`run_cache.DeviceSplits`).
        steps_per_epoch: training steps in one epoch.
        epochs_done: epochs already trained (0 for a new run).
        diverged_at: the step a resumed run diverged at, else None.
        log: receives one line per epoch and per event.
        on_epoch: called after each epoch with its metrics; a non-empty return prunes the run.
        events: the run's TensorBoard event files, or None when none are written.
    """

    run: Run
    model: keras.Model
    data: object
    steps_per_epoch: int
    epochs_done: int = 0
    diverged_at: int | None = None
    log: Callable[[str], None] = print
    on_epoch: Callable[[int, dict], str | None] | None = None
    events: EventLog | None = None


def current_learning_rate(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def run_one(
    results_root: str,
    config: RunConfig,
    variant: str,
    seed: int,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[int, dict], str | None] | None = None,
    tensorboard: bool = True,
    rerun: bool = False,
) -> str:
    """Runs (or resumes, or skips) one run.

    Args:
        on_epoch: optional `f(epoch, values) -> reason or None`, called after each epoch is saved with
            the epoch's metrics (`METRIC_COLUMNS` minus `epoch`); a returned reason stops the run as
            "pruned" (used by the search to prune trials).
        tensorboard: write TensorBoard event files into the run's `tensorboard/` (`event_log`).
        rerun: discard what the directory holds (finished, shared or failed) and train from scratch.

    Returns:
        "done", "diverged", "pruned", "skipped", "shared" (another experiment's identical run, linked),
        "busy" or "failed".
    """
    run = Run(results_root, config, variant, seed)
    if rerun:
        with storage.run_lock(run.directory) as locked:
            if locked:  # else the runner's own lock says who holds it
                log(f"{run.label}: --rerun: discarding its results and training it from scratch")
                run_store.unshare(run.directory)
                run.discard_training()
    elif run_store.share_finished_run(results_root, config, variant, seed, log):
        return "shared"
    with storage.run_lock(run.directory) as locked:
        if not locked:
            log(f"{run.label}: another process is running it; leaving it alone")
            return "busy"
        status = locked_run(run, log, on_epoch, tensorboard)
        if status in (*TERMINAL_STATUSES, "skipped"):  # after the final meta.json; "skipped" is finished too
            step_logs.compact(run.directory)
        return status


def locked_run(run, log, on_epoch, tensorboard):
    storage.remove_temporaries(run.directory)  # a killed run's half-written checkpoint or JSON
    text = resolved_config_text(run.config, run.variant, run.seed)
    files = inspect_run(run.directory)
    factories = factory_provenance(run.config)
    if os.path.exists(run.path("config.yaml")) and files.damaged_file != "config.yaml":
        with open(run.path("config.yaml"), encoding="utf-8") as stream:
            existing = stream.read()
        reuse = judge(run.label, existing, text, files.meta, factories)
        if reuse.action == "refuse":
            log(f"{run.label}: {run.directory} {reuse.reason}")
            return "failed"
        if reuse.action == "retrain":
            log(f"{run.label}: {reuse.reason}")
            run.discard_training()
            files = RunFiles("new")  # nothing of the old attempt is kept, its meta.json included
        elif files.state == "finished":
            if existing != text:  # a new description, baseline or seed list, for the report
                storage.atomic_write_text(run.path("config.yaml"), text)
            return "skipped"
    if files.state == "damaged":
        damaged = run.path(files.damaged_file)
        log(f"{run.label}: {damaged} is damaged ({files.problem}); training the run again from scratch")
        run.discard_training()
    storage.atomic_write_text(run.path("config.yaml"), text)
    meta = {
        **files.meta,
        **provenance(),
        **factories,
        "training_id": run_store.training_id(text),
        "experiment": run.config.name,
        "variant": run.variant,
        "seed": run.seed,
    }
    meta.update(status=RunStatus.RUNNING.value, started=meta.get("started", time.time()), error=None)
    meta.pop("traceback", None)  # a failed attempt's
    run.write_meta(meta)
    try:
        meta.update(train(run, files.progress, log, on_epoch, tensorboard))
    except KeyboardInterrupt:
        meta["status"] = RunStatus.INTERRUPTED.value
        raise RunInterrupted(run.label, epochs_saved(run.directory)) from None
    except Exception as error:  # recorded, so the other runs go on
        if isinstance(error, OSError) and error.errno in storage.UNWRITABLE:
            raise  # every later run would fail the same way: the command stops here
        meta.update(status=RunStatus.FAILED.value, **failure(error))
        log(failure_line(run.label, error))
    finally:
        meta["finished"] = time.time()
        run.write_meta(meta)
    if meta["status"] in TERMINAL_STATUSES:
        # Only now: a run killed before its final meta.json resumes from the last checkpoint.
        for old in run.checkpoints():
            os.unlink(old)
    return meta["status"]


def fit_epoch(model, training, x_train, y_train, order, epoch):
    """Trains one epoch; returns its logs. `steps_per_execution: auto` on one device runs the epoch as
    one graph execution over the device tensors (`train_epoch`); otherwise Keras `fit` with `tf.data`."""
    if training.steps_per_execution == "auto" and training.distribute == "none":
        return train_epoch(model, x_train, y_train, order, training.batch_size)
    with nonfinite_errors():  # the runner's models are StabilizedModels; a Keras model's fit is wrapped too
        history = model.fit(
            epoch_dataset(x_train, y_train, order, training.batch_size),
            epochs=epoch,
            initial_epoch=epoch - 1,
            shuffle=False,
            verbose=0,
        ).history
    return {name: values[-1] for name, values in history.items()}


def evaluate(model, training, x, y):
    """Loss and accuracy on (x, y), as Keras `evaluate` reports them."""
    batch_size = max(training.batch_size, 500)
    if training.distribute == "none":
        return evaluate_arrays(model, x, y, batch_size)
    return model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)


def epoch_order(seed, epoch, examples):
    """The order of the training examples in epoch `epoch` of a run with `seed`: a function of both
    alone, so a resumed run draws the epochs it has left as an uninterrupted one would."""
    return np.random.default_rng([seed, epoch]).permutation(examples)


def train_one_epoch(model, training, data, seed, epoch, steps_per_epoch):
    """Trains and validates epoch `epoch`; returns its `EpochRecord`."""
    started = time.perf_counter()
    order = epoch_order(seed, epoch, len(data.splits.y_train))
    history = fit_epoch(model, training, data.x_train, data.y_train, order, epoch)
    validation = evaluate(model, training, data.x_val, data.y_val)
    metrics = EpochMetrics(
        train_loss=history["loss"],
        train_accuracy=history["accuracy"],
        val_loss=validation["loss"],
        val_accuracy=validation["accuracy"],
        grad_norm=history["grad_norm"],
        clipped_norm=history["clipped_norm"],
        clip_rate=history["clip_rate"],
        nonfinite_steps=history["nonfinite_steps"],
        lr=current_learning_rate(model),
    )
    steps = model.step_log.drain()
    return EpochRecord(epoch, (epoch - 1) * steps_per_epoch, metrics, steps, time.perf_counter() - started)


def train(run, progress, log, on_epoch=None, tensorboard=True):
    """Trains the run from `progress` (or from scratch); returns what meta.json gets at the end."""
    config, training = run.config, run.config.training
    configure_determinism(run.seed)
    data = splits_for_run(config.dataset, run.seed)
    steps_per_epoch = math.ceil(len(data.splits.y_train) / training.batch_size)
    with distribution_strategy(training).scope():
        model = model_for_run(config, steps_per_epoch, data.splits.task, run.seed)
    progress = restore(run, model, progress, log)
    done, diverged_at = (progress.epochs_done, progress.diverged_at_step) if progress else (0, None)
    events = EventLog(run.directory, done) if tensorboard else None
    try:
        return train_epochs(RunState(run, model, data, steps_per_epoch, done, diverged_at, log, on_epoch, events))
    finally:
        if events is not None:
            events.close()


def first_step_loss(run):
    """The loss of a resumed run's first step, which the divergence rule measures growth against."""
    rows = storage.read_csv_rows(run.path("steps.csv"))
    return float(rows[0][STEP_COLUMNS.index("loss")]) if rows else None


def train_epochs(state: RunState) -> dict:
    """Trains the epochs after `state.epochs_done`, then tests; returns what meta.json gets at the end."""
    run, model, data, steps_per_epoch, log = state.run, state.model, state.data, state.steps_per_epoch, state.log
    done, diverged_at, on_epoch, events = state.epochs_done, state.diverged_at, state.on_epoch, state.events
    config, training = run.config, run.config.training
    applies_nonfinite = nonfinite_policy(config.stabilizer) == "propagate"
    pruned = None
    # A run resumed after the epoch it diverged in has nothing left to train.
    last = done if diverged_at is not None and training.stop_on_divergence else training.epochs
    start_loss = first_step_loss(run) if done else None
    if done == 0 and curvature.due(training.sharpness, 0):
        sharpness_log.record(
            run.directory, 0, 0, curvature.measure(model, data.x_train, data.y_train, training.sharpness)
        )
    for epoch in range(done + 1, last + 1):
        record = train_one_epoch(model, training, data, run.seed, epoch, steps_per_epoch)
        if curvature.due(training.sharpness, epoch):  # before save_epoch: its progress.json commits the row
            values = curvature.measure(model, data.x_train, data.y_train, training.sharpness)
            sharpness_log.record(run.directory, epoch, record.first_step + steps_per_epoch, values)
        m = record.metrics
        start_loss = float(record.steps[0][0]) if start_loss is None and len(record.steps) else start_loss
        if diverged_at is None:
            end = EpochEnd(m.train_loss, m.val_loss, m.nonfinite_steps, record.first_step + steps_per_epoch)
            at = first_divergent_step(record.steps, end, start_loss or 0.0, applies_nonfinite)
            diverged_at = None if at is None else record.first_step + at
        save_epoch(run, model, record, diverged_at)
        if events is not None:
            events.write_epoch(epoch, dataclasses.asdict(m), dict(zip(STEP_FIELDS, record.steps.T)), record.first_step)
        done = epoch
        log(f"{run.label} epoch {epoch}/{training.epochs}  {record.summary()}")
        if diverged_at is not None and training.stop_on_divergence:
            log(f"{run.label}: diverged at step {diverged_at}; stopping this run")
            break
        pruned = on_epoch(epoch, dataclasses.asdict(m)) if on_epoch is not None else None
        if pruned:
            log(f"{run.label}: pruned after epoch {epoch}: {pruned}")
            break

    test = evaluate(model, training, data.x_test, data.y_test)
    seconds = [float(row[1]) for row in storage.read_csv_rows(run.path("timing.csv"))]
    status = RunStatus.DIVERGED if diverged_at is not None else RunStatus.PRUNED if pruned else RunStatus.DONE
    if events is not None:
        events.finish(status, {"loss": float(test["loss"]), "accuracy": float(test["accuracy"])}, diverged_at)
    return {
        "status": status.value,
        "epochs_done": done,
        "pruned_reason": pruned or None,
        "diverged_at_step": diverged_at,
        "steps_per_epoch": steps_per_epoch,
        "dataset_source": data.splits.source,
        "num_classes": data.splits.task.num_classes,
        "test": {"loss": float(test["loss"]), "accuracy": float(test["accuracy"])},
        "timings": {"seconds_total": sum(seconds), "seconds_per_epoch": sum(seconds) / max(1, len(seconds))},
    }
