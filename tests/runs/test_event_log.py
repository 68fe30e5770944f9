"""TensorBoard event files of a run, read back with TensorBoard's own readers: metrics, per-step
norms, HParams, final scores, and a resumed run that neither repeats nor loses a point."""

import csv
import gzip
import os
import textwrap

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator, plugin_event_multiplexer
from tensorboard.plugins.hparams import metadata as hparams_metadata

from keras_stability.cli import build_parser
from keras_stability.config.loading import load_experiment
from keras_stability.experiments import runner
from keras_stability.experiments.runner import run_one
from keras_stability.runs import run_identity
from keras_stability.runs.event_log import NOT_HPARAMS, SUBDIRECTORY, EventLog, write_event_logs
from keras_stability.runs.storage import read_json

TINY = """\
name: tiny
seeds: [0]
dataset: {name: mnist_small, train_size: 300}
model: {name: mlp, hidden: [16]}
optimizer: {name: sgd, learning_rate: 0.1}
training: {epochs: 2, batch_size: 100}
variants:
  plain: {stabilizer: null}
  exploding:
    optimizer: {name: sgd, learning_rate: 1.0e+12}
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two real runs of 2 epochs × 3 steps: one trains, one diverges in its first epoch."""
    root = tmp_path_factory.mktemp("results")
    path = root / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY))
    outcomes = {
        variant: run_one(str(root), config, variant, seed, log=lambda _: None)
        for variant, seed, config in load_experiment(str(path)).runs()
    }
    assert outcomes == {"plain": "done", "exploding": "diverged"}
    return root


def run_directory(results, variant):
    return os.path.join(results, "tiny", variant, "seed-0")


def columns(path):
    """A CSV (a finished run's steps.csv.gz decompressed) as {column: list of float32 values}, the
    precision of TensorBoard's scalars."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as stream:
        header, *rows = list(csv.reader(stream))
    return {name: [np.float32(row[i]) for row in rows] for i, name in enumerate(header)}


def accumulator(directory):
    events = event_accumulator.EventAccumulator(
        os.path.join(directory, SUBDIRECTORY), size_guidance={event_accumulator.SCALARS: 0}
    )
    events.Reload()
    return events


def points(events, tag):
    return [(point.step, np.float32(point.value)) for point in events.Scalars(tag)]


def check_run(directory):
    """Every metrics.csv and steps.csv value is in the events, once, at its epoch or global step."""
    events = accumulator(directory)
    metrics = columns(os.path.join(directory, "metrics.csv"))
    steps = columns(os.path.join(directory, "steps.csv.gz"))
    epochs = [int(e) for e in metrics["epoch"]]
    for name in runner.METRIC_COLUMNS[1:]:
        np.testing.assert_array_equal(points(events, f"epoch/{name}"), list(zip(epochs, metrics[name])), err_msg=name)
    global_steps = [int(s) for s in steps["step"]]
    for name in runner.STEP_COLUMNS[2:]:
        np.testing.assert_array_equal(
            points(events, f"step/{name}"), list(zip(global_steps, steps[name])), err_msg=name
        )
    return events


def test_events_of_finished_runs(results):
    assert sorted(write_event_logs(str(results))) == [
        run_directory(results, "exploding"),
        run_directory(results, "plain"),
    ]
    for variant in ("plain", "exploding"):
        directory = run_directory(results, variant)
        events = check_run(directory)
        meta = read_json(os.path.join(directory, "meta.json"))
        final = {
            tag.removeprefix("final/"): points(events, tag)
            for tag in events.Tags()["scalars"]
            if tag.startswith("final/")
        }
        last = meta["epochs_done"]
        expected = {
            "diverged": [(last, float(variant == "exploding"))],
            "test_loss": [(last, np.float32(meta["test"]["loss"]))],
            "test_accuracy": [(last, np.float32(meta["test"]["accuracy"]))],
        }
        if variant == "exploding":
            expected["diverged_at_step"] = [(last, np.float32(meta["diverged_at_step"]))]
        assert final.keys() == expected.keys()
        for name, value in final.items():
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
    plain = accumulator(run_directory(results, "plain"))
    assert [s for s, _ in points(plain, "epoch/val_accuracy")] == [1, 2]
    assert [s for s, _ in points(plain, "step/grad_norm")] == [1, 2, 3, 4, 5, 6]  # 300 examples / batch 100
    exploding = read_json(os.path.join(run_directory(results, "exploding"), "meta.json"))
    assert exploding["epochs_done"] == 1 and 1 <= exploding["diverged_at_step"] <= 3


def test_hparams_name_the_runs(results):
    write_event_logs(str(results))
    # The HParams plugin's view of `tensorboard --logdir results/tiny`: one session per run, named
    # by the directory layout.
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(results / "tiny"))
    multiplexer.Reload()
    content = multiplexer.PluginRunToTagToContent(hparams_metadata.PLUGIN_NAME)
    assert sorted(content) == ["exploding/seed-0/tensorboard", "plain/seed-0/tensorboard"]
    sessions = {
        run: hparams_metadata.parse_session_start_info_plugin_data(tags[hparams_metadata.SESSION_START_INFO_TAG])
        for run, tags in content.items()
    }
    for run, session in sessions.items():
        values = {name: getattr(value, value.WhichOneof("kind")) for name, value in session.hparams.items()}
        variant = run.split("/")[0]
        assert values["experiment"] == "tiny" and values["variant"] == variant and values["seed"] == 0
        assert values["config.model.hidden"] == "[16]" and values["config.dataset.train_size"] == 300
        assert values["config.optimizer.learning_rate"] == (1e12 if variant == "exploding" else 0.1)
        assert values["config.training.stop_on_divergence"] is True
        assert not set(values) & set(NOT_HPARAMS) and "config.stabilizer" not in values  # null: left out
        meta = read_json(os.path.join(run_directory(results, variant), "meta.json"))
        assert session.start_time_secs == meta["started"]
    # Each run is its own session group, so the dashboard lists variants and seeds row by row.
    assert len({session.group_name for session in sessions.values()}) == 2


def test_not_hparams_are_the_experiment_level_settings():
    assert set(NOT_HPARAMS) == {"config.name"} | {f"config.{key}" for key in run_identity.EXPERIMENT_LEVEL}


def test_resumed_run_neither_repeats_nor_loses_points(results):
    directory = run_directory(results, "plain")
    metrics = columns(os.path.join(directory, "metrics.csv"))
    steps = columns(os.path.join(directory, "steps.csv.gz"))

    def epoch_values(epoch):
        return {name: metrics[name][epoch - 1] for name in runner.METRIC_COLUMNS[1:]}

    def epoch_steps(epoch):
        return {name: np.array(steps[name][3 * (epoch - 1) : 3 * epoch]) for name in runner.STEP_COLUMNS[2:]}

    # The first attempt logs both epochs and is killed before it ends (no `finish`, file left open);
    # the run's progress.json says epoch 1, so the runner resumes after it and trains epoch 2 again.
    killed = EventLog(directory)
    for epoch in (1, 2):
        killed.write_epoch(epoch, epoch_values(epoch), epoch_steps(epoch), 3 * (epoch - 1))
    resumed = EventLog(directory, epochs_done=1)
    resumed.write_epoch(2, epoch_values(2), epoch_steps(2), 3)
    meta = read_json(os.path.join(directory, "meta.json"))
    resumed.finish("done", meta["test"])
    assert len(os.listdir(os.path.join(directory, SUBDIRECTORY))) == 1
    events = check_run(directory)
    assert [s for s, _ in points(events, "step/loss")] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in points(events, "epoch/lr")] == [1, 2]
    killed.close()


def test_no_tensorboard_flag():
    parser = build_parser()
    assert parser.parse_args(["run", "x.yaml"]).no_tensorboard is False
    assert parser.parse_args(["run", "x.yaml", "--no-tensorboard"]).no_tensorboard is True
