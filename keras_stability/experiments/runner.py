"""Running one (experiment, variant, seed): deterministic, resumable, crash-safe.

Layout of `results/<experiment>/<variant>/seed-<n>/`:

- `config.yaml`   the fully resolved run configuration;
- `meta.json`     status (running / done / diverged / failed), provenance, timings, test scores;
- `metrics.csv`   one row per epoch, `METRIC_COLUMNS` (deterministic: no wall time);
- `steps.csv`     one row per training step, `STEP_COLUMNS`;
- `timing.csv`    seconds per epoch (wall time, so it differs between identical runs);
- `checkpoint-epoch-<k>.keras` and `progress.json`: the last completed epoch, for resuming (the
  checkpoint is deleted once the run has finished).

Every file is replaced atomically. `progress.json` is written last at each epoch end, so a run
killed at any moment resumes from a consistent epoch and ends with the same bytes as an
uninterrupted run.
"""

import glob
import math
import os
import time

import keras
import numpy as np
import pydantic
import tensorflow as tf
import yaml

from keras_stability.datasets import load_dataset
from keras_stability.epoch_loop import train_epoch
from keras_stability.experiments import run_store, storage
from keras_stability.experiments.loading import field_annotation, unwrap
from keras_stability.experiments.provenance import provenance
from keras_stability.experiments.schema import RunConfig
from keras_stability.experiments.training import compiled_model, distribution_strategy, epoch_dataset, nonfinite_policy
from keras_stability.factories import factory_provenance
from keras_stability.step_log import STEP_FIELDS

METRIC_COLUMNS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
    "grad_norm", "clipped_norm", "clip_rate", "nonfinite_steps", "lr",
)
STEP_COLUMNS = ("epoch", "step") + STEP_FIELDS
TIMING_COLUMNS = ("epoch", "seconds")
FINISHED = ("done", "diverged", "pruned")


def number(value):
    """Shortest text that reads back as the same float32 (`nan`, `inf` included)."""
    return repr(float(np.float32(value)))


# Settings of the experiment as a whole: editing them (adding seeds, say) leaves finished runs valid.
EXPERIMENT_LEVEL = ("seeds", "description", "baseline")


def resolved_config_text(config, variant, seed):
    document = {"experiment": config.name, "variant": variant, "seed": seed, "config": config.model_dump(mode="json")}
    return yaml.safe_dump(document, sort_keys=False)


def what_the_run_trains(config_text):
    """The parts of a config.yaml that decide the run's numbers (all but `EXPERIMENT_LEVEL`).

    The configuration is read through the current schema, so a config.yaml written before `model` and
    `dataset` became tagged unions (every model's keys in one flat mapping) compares equal when the
    keys its model and dataset use are the same: the keys they ignore are dropped first.
    """
    document = yaml.safe_load(config_text)
    config = {k: v for k, v in document["config"].items() if k not in EXPERIMENT_LEVEL}
    dataset = config.get("dataset") or {}
    if "adding_samples" in dataset and dataset.get("name") in ("mnist", "fashion_mnist") and dataset.get("train_size"):
        document["train_size_before_validation_split"] = True  # the flat schema's IDX loaders cut there
    config.update({section: used_keys(section, config[section]) for section in ("model", "dataset") if section in config})
    try:
        config = RunConfig.model_validate({**config, "name": document["experiment"]}).model_dump(mode="json")
    except pydantic.ValidationError:
        pass  # compared as written: it differs from every valid configuration
    document["config"] = {k: v for k, v in config.items() if k not in EXPERIMENT_LEVEL}
    return document


def used_keys(section, mapping):
    """`mapping` (a model or dataset section) without the keys its spec does not declare."""
    spec = unwrap(field_annotation(RunConfig.model_fields[section]), mapping)
    if spec is None or not isinstance(mapping, dict):
        return mapping
    return {key: value for key, value in mapping.items() if key in spec.model_fields}


def configure_determinism(seed):
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def seed_states(model):
    """The states of the model's random seed generators (dropout), in a fixed order.

    `model.save` does not store them, so the runner keeps them beside the checkpoint; without them a
    resumed run would draw different dropout masks.
    """
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def current_learning_rate(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class Run:
    """One run's directory and the rows it has written so far."""

    def __init__(self, results_root, config, variant, seed):
        self.config, self.variant, self.seed = config, variant, seed
        self.directory = storage.run_directory(results_root, config.name, variant, seed)
        self.label = f"{config.name}/{variant}/seed-{seed}"

    def path(self, name):
        return os.path.join(self.directory, name)

    def meta(self):
        return storage.read_json(self.path("meta.json"), {})

    def write_meta(self, meta):
        storage.atomic_write_json(self.path("meta.json"), meta)

    def checkpoints(self):
        return sorted(glob.glob(self.path("checkpoint-epoch-*.keras")))


def run_one(results_root, config, variant, seed, log=print, on_epoch=None):
    """Runs (or resumes, or skips) one run.

    Args:
        on_epoch: optional `f(epoch, values) -> reason or None`, called after each epoch is saved with
            the epoch's metrics (`METRIC_COLUMNS` minus `epoch`); a returned reason stops the run as
            "pruned" (used by the search to prune trials).

    Returns:
        "done", "diverged", "pruned", "skipped", "shared" (another experiment's identical run, linked),
        "busy" or "failed".
    """
    if run_store.share_finished_run(results_root, config, variant, seed, log):
        return "shared"
    run = Run(results_root, config, variant, seed)
    with storage.run_lock(run.directory) as locked:
        if not locked:
            log(f"{run.label}: another process is running it; leaving it alone")
            return "busy"
        return locked_run(run, log, on_epoch)


def locked_run(run, log, on_epoch):
    text = resolved_config_text(run.config, run.variant, run.seed)
    if os.path.exists(run.path("config.yaml")):
        with open(run.path("config.yaml"), encoding="utf-8") as stream:
            existing = stream.read()
        if what_the_run_trains(existing) != what_the_run_trains(text):
            log(f"{run.label}: {run.directory} holds a run of a different configuration; "
                "delete it or choose another --results directory")
            return "failed"
        if run.meta().get("status") in FINISHED:
            if existing != text:  # a new description, baseline or seed list, for the report
                storage.atomic_write_text(run.path("config.yaml"), text)
            return "skipped"
    storage.atomic_write_text(run.path("config.yaml"), text)
    meta = {**run.meta(), **provenance(), **factory_provenance(run.config),
            "experiment": run.config.name, "variant": run.variant, "seed": run.seed}
    meta.update(status="running", started=meta.get("started", time.time()), error=None)
    run.write_meta(meta)
    try:
        meta.update(train(run, meta, log, on_epoch))
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        raise
    except Exception as error:  # recorded, so the other runs go on
        meta.update(status="failed", error=f"{type(error).__name__}: {error}")
        log(f"{run.label}: failed: {meta['error']}")
    finally:
        meta["finished"] = time.time()
        run.write_meta(meta)
    if meta["status"] in FINISHED:
        # Only now: a run killed before its final meta.json resumes from the last checkpoint.
        for old in run.checkpoints():
            os.unlink(old)
    return meta["status"]


def fit_epoch(model, training, x_train, y_train, order, epoch):
    """Trains one epoch; returns its logs. `steps_per_execution: auto` on one device runs the epoch as
    one graph execution over the device tensors (`train_epoch`); otherwise Keras `fit` with `tf.data`."""
    if training.steps_per_execution == "auto" and training.distribute == "none":
        return train_epoch(model, x_train, y_train, order, training.batch_size)
    history = model.fit(
        epoch_dataset(x_train, y_train, order, training.batch_size),
        epochs=epoch, initial_epoch=epoch - 1, shuffle=False, verbose=0,
    ).history
    return {name: values[-1] for name, values in history.items()}


def train(run, meta, log, on_epoch=None):
    config, training = run.config, run.config.training
    configure_determinism(run.seed)
    splits = load_dataset(config.dataset, run.seed)
    steps_per_epoch = math.ceil(len(splits.y_train) / training.batch_size)
    progress = storage.read_json(run.path("progress.json"), {"epochs_done": 0})
    done = progress["epochs_done"]
    with distribution_strategy(training).scope():
        if done:
            model = keras.models.load_model(run.path(progress["checkpoint"]))
            for variable, state in zip(seed_states(model), progress["seed_states"], strict=True):
                variable.assign(np.asarray(state, dtype=variable.dtype))
            log(f"{run.label}: resuming after epoch {done}")
        else:
            model = compiled_model(config, steps_per_epoch, splits.task)
    keep = lambda rows: [row for row in rows if int(row[0]) <= done]  # noqa: E731
    metrics, steps, timing = (keep(storage.read_csv_rows(run.path(name))) for name in ("metrics.csv", "steps.csv", "timing.csv"))
    diverged_at = meta.get("diverged_at_step") if done else None
    applies_nonfinite = nonfinite_policy(config.stabilizer) == "propagate"
    pruned = None
    x_train, y_train = tf.convert_to_tensor(splits.x_train), tf.convert_to_tensor(splits.y_train)

    for epoch in range(done + 1, training.epochs + 1):
        started = time.perf_counter()
        order = np.random.default_rng([run.seed, epoch]).permutation(len(splits.y_train))
        history = fit_epoch(model, training, x_train, y_train, order, epoch)
        validation = model.evaluate(splits.x_val, splits.y_val, batch_size=max(training.batch_size, 500), verbose=0, return_dict=True)
        step_rows = model.step_log.drain()
        first_step = (epoch - 1) * steps_per_epoch
        steps += [[epoch, first_step + i + 1, *map(number, row)] for i, row in enumerate(step_rows)]
        values = [history["loss"], history["accuracy"], validation["loss"], validation["accuracy"],
                  history["grad_norm"], history["clipped_norm"], history["clip_rate"],
                  history["nonfinite_steps"], current_learning_rate(model)]
        metrics.append([epoch, *map(number, values)])
        timing.append([epoch, f"{time.perf_counter() - started:.3f}"])
        # A non-finite gradient that was applied puts NaN or inf into the weights; the loss can stay
        # finite after it (oneDNN's ReLU turns NaN into 0), so such a step is divergence too.
        bad = [i for i, row in enumerate(step_rows) if not np.isfinite(row[0]) or (applies_nonfinite and not np.isfinite(row[1]))]
        if diverged_at is None and (bad or not (np.isfinite(values[0]) and np.isfinite(values[2]))):
            diverged_at = first_step + (bad[0] + 1 if bad else len(step_rows))
        checkpoint = f"checkpoint-epoch-{epoch:04d}.keras"
        model.save(run.path(".tmp-" + checkpoint))
        os.replace(run.path(".tmp-" + checkpoint), run.path(checkpoint))
        storage.atomic_write_csv(run.path("metrics.csv"), METRIC_COLUMNS, metrics)
        storage.atomic_write_csv(run.path("steps.csv"), STEP_COLUMNS, steps)
        storage.atomic_write_csv(run.path("timing.csv"), TIMING_COLUMNS, timing)
        states = [np.asarray(v.numpy()).tolist() for v in seed_states(model)]
        storage.atomic_write_json(run.path("progress.json"), {"epochs_done": epoch, "checkpoint": checkpoint, "seed_states": states})
        meta.update(epochs_done=epoch, diverged_at_step=diverged_at)
        run.write_meta(meta)
        for old in run.checkpoints():
            if not old.endswith(checkpoint):
                os.unlink(old)
        log(f"{run.label} epoch {epoch}/{training.epochs}  loss {values[0]:.4f}  val_accuracy {values[3]:.4f}  "
            f"grad_norm {values[4]:.3g}  clip_rate {values[6]:.2f}  ({timing[-1][1]}s)")
        if diverged_at is not None and training.stop_on_divergence:
            log(f"{run.label}: diverged at step {diverged_at}; stopping this run")
            break
        pruned = on_epoch(epoch, dict(zip(METRIC_COLUMNS[1:], values))) if on_epoch is not None else None
        if pruned:
            log(f"{run.label}: pruned after epoch {epoch}: {pruned}")
            break

    test = model.evaluate(splits.x_test, splits.y_test, batch_size=max(training.batch_size, 500), verbose=0, return_dict=True)
    seconds = [float(row[1]) for row in timing]
    return {
        "status": "diverged" if diverged_at is not None else "pruned" if pruned else "done",
        "pruned_reason": pruned or None,
        "diverged_at_step": diverged_at,
        "steps_per_epoch": steps_per_epoch,
        "dataset_source": splits.source,
        "test": {"loss": float(test["loss"]), "accuracy": float(test["accuracy"])},
        "timings": {"seconds_total": sum(seconds), "seconds_per_epoch": sum(seconds) / max(1, len(seconds))},
    }
