"""Damaged results on the run side: `run` names the damaged file and trains the run again, never a
traceback and never a damaged run skipped as finished; checkpoints hold the whole training state.

Every case damages a copy of a real run and checks that running it again ends with the bytes of an
undamaged run.
"""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from keras_stability.config.loading import load_experiment
from keras_stability.experiments import checkpoint
from keras_stability.experiments.runner import run_one
from keras_stability.runs import step_logs
from keras_stability.runs.run_files import inspect_run

EXPERIMENT = """\
name: tiny
seeds: [0]
dataset: {name: mnist_small, train_size: 800}
model: {name: mlp, hidden: [16], dropout: 0.1}
optimizer: {name: sgd, learning_rate: 0.1, momentum: 0.9, schedule: {name: cosine}}
training: {epochs: 3, batch_size: 100}
variants:
  clipped:
    stabilizer:
      transforms: [{name: adaptive_clip, clip_factor: 0.05}, {name: zclip, warmup: 3}]
"""
DETERMINISTIC = ("metrics.csv", "steps.csv.gz", "config.yaml")  # the .gz is deterministic too


class Interrupt(KeyboardInterrupt):
    pass


def stop_after(epochs):
    def on_epoch(epoch, values):
        if epoch == epochs:
            raise Interrupt()

    return on_epoch


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished run and the same run interrupted after its second epoch (checkpoint kept)."""
    root = tmp_path_factory.mktemp("runs")
    path = root / "tiny.yaml"
    path.write_text(EXPERIMENT)
    ((variant, seed, config),) = load_experiment(str(path)).runs()
    assert run_one(str(root / "finished"), config, variant, seed, log=lambda _: None) == "done"
    with pytest.raises(KeyboardInterrupt):  # the runner's RunInterrupted, naming the run and its epoch
        run_one(str(root / "interrupted"), config, variant, seed, log=lambda _: None, on_epoch=stop_after(2))
    return root, config


def copy_of(runs, tmp_path, which):
    root, config = runs
    shutil.copytree(root / which, tmp_path / which, symlinks=True)  # results/.trainings holds links
    return tmp_path / which / "tiny" / "clipped" / "seed-0", config


def rerun(tmp_path, which, config):
    messages = []
    outcome = run_one(str(tmp_path / which), config, "clipped", 0, log=messages.append)
    return outcome, messages


def assert_same_as_finished(runs, directory):
    reference = runs[0] / "finished" / "tiny" / "clipped" / "seed-0"
    for name in DETERMINISTIC:
        assert (directory / name).read_bytes() == (reference / name).read_bytes(), name
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["status"] == "done" and meta["epochs_done"] == 3
    assert not [p.name for p in directory.iterdir() if p.name.startswith("checkpoint") or p.name.startswith(".tmp-")]
    assert not (directory / "steps.csv").exists()  # compacted


def cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "meta.json": lambda d: (d / "meta.json").write_text("{not json"),
    "metrics.csv": lambda d: cut_in_half(d / "metrics.csv"),
    "steps.csv.gz": lambda d: cut_in_half(d / "steps.csv.gz"),
    "config.yaml": lambda d: (d / "config.yaml").write_bytes(b"\x00\xff: ["),
}


@pytest.mark.parametrize("damaged", sorted(DAMAGE))
def test_damaged_finished_run_is_named_and_trained_again(runs, tmp_path, damaged):
    directory, config = copy_of(runs, tmp_path, "finished")
    DAMAGE[damaged](directory)
    assert inspect_run(str(directory)).damaged_file == damaged
    outcome, messages = rerun(tmp_path, "finished", config)
    assert outcome == "done"
    assert messages[0].startswith(f"tiny/clipped/seed-0: {directory / damaged} is damaged (")
    assert messages[0].endswith("; training the run again from scratch")
    assert_same_as_finished(runs, directory)


def test_finished_run_whose_steps_disagree_with_its_meta_is_not_finished(runs, tmp_path):
    directory, config = copy_of(runs, tmp_path, "finished")
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps({**meta, "epochs_done": 4}))
    found = inspect_run(str(directory))
    assert (found.state, found.damaged_file) == ("damaged", "metrics.csv")
    assert found.problem == "3 epochs, but meta.json says 4 are done"
    assert rerun(tmp_path, "finished", config)[0] == "done"
    assert_same_as_finished(runs, directory)


def test_sound_finished_run_is_skipped(runs, tmp_path):
    directory, config = copy_of(runs, tmp_path, "finished")
    assert inspect_run(str(directory)).state == "finished"
    assert rerun(tmp_path, "finished", config) == ("skipped", [])


def test_interrupted_run_resumes_and_cuts_rows_appended_after_its_last_epoch(runs, tmp_path):
    directory, config = copy_of(runs, tmp_path, "interrupted")
    found = inspect_run(str(directory))
    assert (found.state, found.progress.epochs_done) == ("unfinished", 2)
    with open(directory / "steps.csv", "a") as stream:
        stream.write("3,17,2.1")  # part of a row that a kill -9 interrupted
    found = inspect_run(str(directory))
    assert (found.state, found.progress.epochs_done, found.damage) == ("unfinished", 2, None)
    assert len(found.tables["steps.csv"]["step"]) == 16  # two epochs of 8 steps; the partial row is not read
    outcome, messages = rerun(tmp_path, "interrupted", config)
    assert outcome == "done" and messages[0] == "tiny/clipped/seed-0: resuming after epoch 2"
    assert_same_as_finished(runs, directory)


def test_an_unfinished_run_keeps_a_plain_step_log_that_the_finished_run_gzips(runs):
    root, _ = runs
    interrupted, finished = (root / which / "tiny" / "clipped" / "seed-0" for which in ("interrupted", "finished"))
    assert not (interrupted / "steps.csv.gz").exists() and not (finished / "steps.csv").exists()
    packed = (finished / "steps.csv.gz").read_bytes()
    written = gzip.decompress(packed)
    # The interrupted run's two epochs are the finished run's first two, byte for byte.
    assert written.startswith((interrupted / "steps.csv").read_bytes())
    assert len(written.splitlines()) == 1 + 3 * 8 and written.splitlines()[-1].startswith(b"3,24,")
    assert packed == step_logs.gzip_bytes(written)


def plain_step_log(directory):
    """The run as its final meta.json leaves it, before its step log is compacted."""
    (directory / "steps.csv").write_bytes(gzip.decompress((directory / "steps.csv.gz").read_bytes()))
    os.unlink(directory / "steps.csv.gz")


KILLED_COMPACTING = """\
import os, signal, sys
from keras_stability.runs import step_logs

os.unlink = lambda path: os.kill(os.getpid(), signal.SIGKILL)  # after the .gz, before steps.csv is removed
step_logs.compact(sys.argv[1])
"""


def test_kill_9_while_compacting_leaves_both_forms_and_the_next_run_compacts_from_the_plain_file(runs, tmp_path):
    directory, config = copy_of(runs, tmp_path, "finished")
    plain_step_log(directory)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", KILLED_COMPACTING, str(directory)], env=environment)
    assert killed.returncode == -signal.SIGKILL
    reference = runs[0] / "finished" / "tiny" / "clipped" / "seed-0" / "steps.csv.gz"
    assert (directory / "steps.csv.gz").read_bytes() == reference.read_bytes()  # whole: written before the kill
    assert gzip.decompress(reference.read_bytes()) == (directory / "steps.csv").read_bytes()
    (directory / "steps.csv.gz").write_bytes(step_logs.gzip_bytes(b"stale"))  # steps.csv is the truth
    assert inspect_run(str(directory)).state == "finished"
    assert rerun(tmp_path, "finished", config) == ("skipped", [])
    assert_same_as_finished(runs, directory)


@pytest.mark.parametrize("damaged", ["progress.json", "checkpoint"])
def test_interrupted_run_with_damaged_progress_or_checkpoint_starts_again(runs, tmp_path, damaged):
    directory, config = copy_of(runs, tmp_path, "interrupted")
    progress = json.loads((directory / "progress.json").read_text())
    name = damaged if damaged == "progress.json" else progress["checkpoint"]
    (directory / name).write_bytes(b"garbage")
    outcome, messages = rerun(tmp_path, "interrupted", config)
    assert outcome == "done"
    assert str(directory / name) in messages[0] and messages[0].endswith("training the run again from scratch")
    assert_same_as_finished(runs, directory)


def test_progress_naming_a_missing_checkpoint_is_damage(runs, tmp_path):
    directory, _ = copy_of(runs, tmp_path, "interrupted")
    name = json.loads((directory / "progress.json").read_text())["checkpoint"]
    os.unlink(directory / name)
    found = inspect_run(str(directory))
    assert (found.state, found.damaged_file) == ("damaged", name)


def test_checkpoint_holds_weights_optimizer_transform_and_dropout_state(runs):
    from keras_stability.datasets.registry import DIGITS
    from keras_stability.experiments.run_cache import model_for_run

    root, config = runs
    directory = root / "interrupted" / "tiny" / "clipped" / "seed-0"
    saved = json.loads((directory / "progress.json").read_text())["checkpoint"]
    model = model_for_run(config, 8, DIGITS, 0)
    checkpoint.load(str(directory / saved), model)
    paths = [v.path for v in checkpoint.state_variables(model)]
    assert any("seed_generator_state" in p for p in paths)  # dropout
    assert any("momentum" in p for p in paths) and any("iteration" in p for p in paths)
    assert len(model.optimizer.transform.variables) > 0  # ZClip's running moments
    with np.load(directory / saved) as archive:
        for i, variable in enumerate(checkpoint.state_variables(model)):
            np.testing.assert_array_equal(variable.numpy(), archive[f"arr_{i}"])
    assert int(model.optimizer.iterations.numpy()) == 16  # two epochs of 8 steps


def test_committed_results_are_sound():
    # Every finished run in the repository's results/ passes the check a rerun applies.
    results = os.path.join(os.path.dirname(__file__), "..", "..", "results")
    found = [inspect_run(os.path.join(d)) for d, _, files in os.walk(results) if "meta.json" in files]
    assert found and all(f.state == "finished" for f in found), [f for f in found if f.state != "finished"][:3]
