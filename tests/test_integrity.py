"""`check_run` on copies of a real finished run: sound as written, damaged in each way it can be."""

import json
import os
import shutil

import numpy as np
import pytest

from keras_stability.experiments import integrity, runner
from keras_stability.experiments.integrity import Damage, check_run
from keras_stability.experiments.loading import load_experiment


def make_finished_run(root):
    """Runs quickstart's no_clip variant, seed 0, for one epoch under `root`; returns its directory."""
    experiment = load_experiment("experiments/quickstart.yaml", ["training.epochs=1"])
    status = runner.run_one(str(root), experiment.variants["no_clip"], "no_clip", 0, log=lambda _: None)
    assert status == "done"
    return os.path.join(str(root), "quickstart", "no_clip", "seed-0")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return make_finished_run(tmp_path_factory.mktemp("results"))


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, at the same place under a results root of its own."""
    copy = tmp_path / "quickstart" / "no_clip" / "seed-0"
    shutil.copytree(finished, copy)
    return str(copy)


def edit(path, change):
    with open(path, "rb") as stream:
        data = stream.read()
    with open(path, "wb") as stream:
        stream.write(change(data))


def edit_meta(run, **changes):
    path = os.path.join(run, "meta.json")
    meta = json.load(open(path))
    meta.update(changes)
    json.dump(meta, open(path, "w"))
    return meta


def test_columns_are_the_runners():
    assert integrity.METRIC_COLUMNS == runner.METRIC_COLUMNS
    assert integrity.STEP_COLUMNS == runner.STEP_COLUMNS
    assert integrity.TIMING_COLUMNS == runner.TIMING_COLUMNS
    assert set(integrity.FINAL_STATUSES) == set(runner.FINISHED)


def test_a_finished_run_is_sound_and_read_as_written(run):
    check = check_run(run)
    assert check.sound and check.damage is None and check.status == "done"
    assert check.document["experiment"] == "quickstart" and check.document["seed"] == 0
    assert check.meta["epochs_done"] == 1
    metrics = np.loadtxt(os.path.join(run, "metrics.csv"), delimiter=",", skiprows=1, ndmin=2)
    for index, column in enumerate(integrity.METRIC_COLUMNS):
        np.testing.assert_array_equal(check.metrics[column], metrics[:, index])
    steps = np.loadtxt(os.path.join(run, "steps.csv"), delimiter=",", skiprows=1, ndmin=2)
    # 8,100 training digits in batches of 100: 81 steps, numbered 1 to 81.
    assert check.meta["steps_per_epoch"] == 81 == len(steps)
    np.testing.assert_array_equal(check.steps["step"], np.arange(1, 82))
    np.testing.assert_array_equal(check.steps["grad_norm"], steps[:, 3])


def half(data):
    return data[: len(data) // 2]


def drop_last_lines(count):
    return lambda data: b"".join(data.splitlines(keepends=True)[:-count])


def drop_column(index):
    def change(data):
        rows = [line.split(b",") for line in data.splitlines()]
        return b"".join(b",".join(row[:index] + row[index + 1:]) + b"\n" for row in rows)

    return change


@pytest.mark.parametrize(
    "name, change, problem",
    [
        ("metrics.csv", half, "cut short: its last line is incomplete"),
        ("metrics.csv", drop_last_lines(1), "0 epochs, but meta.json says 1 are done"),
        ("metrics.csv", drop_column(3), "its columns should be " + ",".join(runner.METRIC_COLUMNS) + ". Received: "
         + ",".join(runner.METRIC_COLUMNS[:3] + runner.METRIC_COLUMNS[4:])),
        ("metrics.csv", lambda data: data.replace(b"\n1,", b"\n2,"), "its epochs are not numbered 1, 2, … in order"),
        ("metrics.csv", lambda data: data.rstrip(b"\n").rsplit(b",", 1)[0] + b",\n",
         "line 2 holds something other than numbers: "),
        ("steps.csv", half, "cut short: its last line is incomplete"),
        ("steps.csv", drop_last_lines(10), "71 steps, but meta.json says 1 epochs of 81 are done"),
        ("steps.csv", lambda data: data.replace(b"\n1,5,", b"\n1,5,x,", 1), "line 6 has 6 fields, not 5"),
        ("timing.csv", lambda data: data + b"2,0.5\n", "2 epochs, but meta.json says 1 are done"),
        ("meta.json", half, "not JSON: "),
        ("meta.json", lambda data: b"[]", "a JSON object was expected. Received: list"),
        ("meta.json", lambda data: data.replace(b'"status": "done"', b'"status": "d\xe9ne"'), "not UTF-8 at byte "),
        ("config.yaml", lambda data: b"experiment: [\n", "YAML syntax error: "),
        ("config.yaml", lambda data: b"- a\n", "a mapping of experiment, variant, seed and config was expected"),
        ("config.yaml", lambda data: data.replace(b"variant: no_clip", b"variant: other"),
         "it describes quickstart/other/seed-0, but lies in quickstart/no_clip/seed-0"),
    ],
    ids=["metrics-cut", "metrics-row-missing", "metrics-column-missing", "metrics-epochs", "metrics-cell",
         "steps-cut", "steps-rows-missing", "steps-field", "timing-extra-row", "meta-cut", "meta-list",
         "meta-latin-1", "config-syntax", "config-list", "config-elsewhere"],
)
def test_each_damage_names_the_file_and_why(run, name, change, problem):
    path = os.path.join(run, name)
    edit(path, change)
    check = check_run(run)
    assert not check.sound and check.status == "damaged"
    assert check.damage.path == path
    assert check.damage.problem.startswith(problem)
    assert str(check.damage) == f"{path}: {check.damage.problem}"
    assert check.metrics == {} or name in ("steps.csv", "timing.csv")


def test_a_missing_file_is_damage_once_epochs_are_done(run):
    os.unlink(os.path.join(run, "steps.csv"))
    assert check_run(run).damage == Damage(os.path.join(run, "steps.csv"), "missing, but meta.json says 1 epochs are done")
    os.unlink(os.path.join(run, "config.yaml"))
    assert check_run(run).damage == Damage(os.path.join(run, "config.yaml"), "missing")


def test_an_unfinished_run_may_hold_one_epoch_more_than_its_meta(run):
    # Killed after metrics.csv and progress.json were written, before meta.json: the runner resumes.
    edit_meta(run, status="running", epochs_done=0)
    checkpoint = json.load(open(os.path.join(run, "progress.json")))["checkpoint"]
    open(os.path.join(run, checkpoint), "w").close()
    assert check_run(run).sound and check_run(run).status == "running"
    edit_meta(run, status="done", epochs_done=0)
    assert check_run(run).damage.problem == "1 epochs, but meta.json says 0 are done"


def test_an_unfinished_run_needs_the_progress_it_resumes_from(run):
    edit_meta(run, status="running")
    progress = os.path.join(run, "progress.json")
    assert check_run(run).damage == Damage(progress, "the checkpoint it resumes from is missing: 'checkpoint-epoch-0001.keras'")
    edit(progress, half)
    assert check_run(run).damage.path == progress and check_run(run).damage.problem.startswith("not JSON: ")
    edit(progress, lambda data: b'{"epochs_done": 2, "checkpoint": "x"}')
    assert check_run(run).damage == Damage(progress, "it resumes after epoch 2, but metrics.csv holds 1")


def test_meta_fields_are_typed(run):
    edit_meta(run, epochs_done="1")
    assert check_run(run).damage.problem == "epochs_done should be an integer ≥ 0. Received: '1'"
    edit_meta(run, epochs_done=1, status=None)
    assert check_run(run).damage.problem == "status should be text. Received: None"
