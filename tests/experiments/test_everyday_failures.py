"""Ordinary failures are one line and an exit status: Ctrl-C, unwritable directories, no experiment
files, no network, non-finite gradients, a factory's bug or unbuilt model, holes in the schema."""

import json
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_stability import NonFiniteGradientError, stabilize, train_epoch
from keras_stability.cli import main
from keras_stability.config.loading import ConfigError, load_experiment
from keras_stability.config.sections import DATASET_SPECS
from keras_stability.datasets import download, load_dataset, registry
from keras_stability.datasets.idx import DataError
from keras_stability.experiments import suite
from keras_stability.experiments.run_errors import RunInterrupted
from keras_stability.experiments.runner import run_one
from keras_stability.nonfinite import MESSAGE

pytestmark = pytest.mark.slow  # trains many runs end to end

ONE_RUN = """\
name: tiny
seeds: [0]
dataset: {name: mnist_small, train_size: 400}
model: {name: mlp, hidden: [8]}
optimizer: {name: sgd, learning_rate: 0.1}
training: {epochs: 3, batch_size: 100}
"""


def write(directory, text, name="tiny.yaml"):
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def stderr_lines(capsys):
    return capsys.readouterr().err.splitlines()


def test_ctrl_c_is_one_line_with_exit_130_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    path, results = write(tmp_path, ONE_RUN), str(tmp_path / "results")

    def interrupted_after_epoch_2(*arguments, **options):
        def on_epoch(epoch, values):
            if epoch == 2:
                raise KeyboardInterrupt

        return run_one(*arguments, **options, on_epoch=on_epoch)

    monkeypatch.setattr(suite, "run_one", interrupted_after_epoch_2)
    assert main(["run", path, "--results", results, "--no-progress"]) == 130
    assert stderr_lines(capsys) == [
        "keras-stability run: tiny/base/seed-0: interrupted; running the same command again resumes it after epoch 2"
    ]
    monkeypatch.undo()
    assert main(["run", path, "--results", results, "--no-progress"]) == 0
    assert "tiny/base/seed-0: resuming after epoch 2" in capsys.readouterr().out
    assert issubclass(RunInterrupted, KeyboardInterrupt)


def test_unwritable_results_or_report_directory_is_one_line_and_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, ONE_RUN)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", path, "--results", str(blocker / "results"), "--no-progress"]) == 1
    assert stderr_lines(capsys) == [f"keras-stability run: {blocker / 'results'}: Not a directory"]
    (tmp_path / "results").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["report", str(tmp_path / "results"), "-o", str(blocker / "report")]) == 1
    assert stderr_lines(capsys) == [f"keras-stability report: {blocker / 'report'}: Not a directory"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_full_disk_stops_the_command_instead_of_failing_every_run(tmp_path, monkeypatch, capsys):
    import errno

    from keras_stability.experiments import runner

    def full(*arguments, **options):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "results" / "x"))

    monkeypatch.setattr(runner, "train", full)
    assert main(["run", write(tmp_path, ONE_RUN), "--results", str(tmp_path / "results"), "--no-progress"]) == 1
    assert stderr_lines(capsys)[-1] == f"keras-stability run: {tmp_path / 'results' / 'x'}: No space left on device"


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_directory_without_experiment_files_is_an_error(tmp_path, capsys, command):
    assert main([command, str(tmp_path)]) == 2
    assert stderr_lines(capsys) == [f"{tmp_path}: no experiment files (*.yaml) in this directory"]


def test_a_download_that_cannot_start_fails_at_once_saying_how_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_STABILITY_NO_DOWNLOAD", raising=False)
    monkeypatch.delenv("KERAS_STABILITY_MNIST_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(download, "DOWNLOAD_HOST", ("127.0.0.1", 9))  # nothing listens: refused at once
    monkeypatch.setattr(download, "_UNREACHABLE", {})
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        load_dataset(DATASET_SPECS["mnist"](), 0)
    assert time.monotonic() - started < 30
    assert str(error.value).startswith(registry.how_to_get("mnist") + " (cannot download it: no connection to")
    assert download.CONNECT_TIMEOUT_S < 30


def exploding_model(nonfinite):
    model = stabilize(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), nonfinite=nonfinite)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_nonfinite_raise_is_the_packages_own_error_with_its_message_first():
    x, y = np.array([[np.nan, 1.0]] * 4, np.float32), np.zeros((4, 1), np.float32)
    with pytest.raises(NonFiniteGradientError) as error:
        exploding_model("raise").fit(x, y, batch_size=2, verbose=0)
    assert str(error.value) == MESSAGE
    assert isinstance(error.value, tf.errors.InvalidArgumentError)  # what Keras users catch
    with pytest.raises(NonFiniteGradientError, match=r"^A training step's gradient holds a NaN"):
        train_epoch(exploding_model("raise"), x, y, np.arange(4), 2)


def test_nonfinite_raise_in_the_runner_records_the_message(tmp_path):
    path = write(
        tmp_path,
        ONE_RUN.replace("learning_rate: 0.1", "learning_rate: 1.0e+30")
        + "stabilizer: {transforms: [], nonfinite: raise}\n",
    )
    ((variant, seed, config),) = load_experiment(path).runs()
    lines = []
    assert run_one(str(tmp_path / "r"), config, variant, seed, log=lines.append) == "failed"
    meta = json.loads((tmp_path / "r" / "tiny" / "base" / "seed-0" / "meta.json").read_text())
    assert meta["error"] == f"NonFiniteGradientError: {MESSAGE}"
    assert lines[-1].startswith(f"tiny/base/seed-0: failed: NonFiniteGradientError: {MESSAGE} (at ")


MODELS = """\
import keras


def on_fire(input_shape, num_classes, seed):
    raise RuntimeError("disk on fire")


def unbuilt(input_shape, num_classes, seed, width=8):
    return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(width), keras.layers.Dense(num_classes)])
"""


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    import sys

    (tmp_path / "usermodels.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("usermodels", None)


def test_a_factory_error_keeps_its_traceback_and_shows_its_last_frame(user_models):
    path = write(user_models, ONE_RUN.replace("{name: mlp, hidden: [8]}", '{factory: "usermodels:on_fire"}'))
    ((variant, seed, config),) = load_experiment(path).runs()
    lines = []
    assert run_one(str(user_models / "r"), config, variant, seed, log=lines.append) == "failed"
    meta = json.loads((user_models / "r" / "tiny" / "base" / "seed-0" / "meta.json").read_text())
    assert meta["error"] == "RuntimeError: disk on fire"
    source = str(user_models / "usermodels.py")
    assert f'File "{source}", line 5, in on_fire\n' in "".join(meta["traceback"])
    assert lines[-1] == f"tiny/base/seed-0: failed: RuntimeError: disk on fire (at {source}:5 in on_fire)"


def test_factory_args_are_checked_against_its_signature_at_validate(user_models):
    path = write(
        user_models,
        ONE_RUN.replace("{name: mlp, hidden: [8]}", '{factory: "usermodels:unbuilt", args: {widht: 4}}'),
    )
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    assert error.value.lines == [
        f"{path}:4:46: model.args: the arguments do not fit "
        "usermodels:unbuilt(input_shape, num_classes, seed, width=8): got an unexpected keyword argument "
        "'widht'. Received: args={'widht': 4}; the runner passes input_shape, num_classes, seed and `args` "
        "as keyword arguments"
    ]


def test_an_unbuilt_model_is_built_from_the_input_shape(user_models):
    path = write(user_models, ONE_RUN.replace("{name: mlp, hidden: [8]}", '{factory: "usermodels:unbuilt"}'))
    ((variant, seed, config),) = load_experiment(path).runs()
    assert run_one(str(user_models / "r"), config, variant, seed, log=lambda line: None) == "done"


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("{name: mlp, hidden: [8]}", "{name: {mlp: 1}}", "model.name: Input should be a valid string"),
        ("{name: mnist_small, train_size: 400}", "{name: [1]}", "dataset.name: Input should be a valid string"),
        ("epochs: 3", "epochs: 100000000000000000000", "training.epochs: Input should be less than or equal to"),
        ("hidden: [8]", "hidden: [8000000000]", "model.hidden.0: Input should be less than or equal to"),
        ("learning_rate: 0.1", 'learning_rate: "0.1"', "optimizer.learning_rate: Input should be a valid number"),
        ("batch_size: 100", "batch_size: true", "training.batch_size: Input should be a valid integer"),
        ("learning_rate: 0.1", "learning_rate: .inf", "optimizer.learning_rate: Input should be a finite number"),
    ],
)
def test_schema_holes_are_one_line_and_nothing_is_coerced(tmp_path, old, new, message):
    path = write(tmp_path, ONE_RUN.replace(old, new))
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    assert len(error.value.lines) == 1 and message in error.value.lines[0], error.value.lines


def test_numbers_written_as_yaml_1_2_are_numbers(tmp_path):
    path = write(tmp_path, ONE_RUN.replace("learning_rate: 0.1", "learning_rate: 1e-3"))
    ((_, _, config),) = load_experiment(path).runs()
    assert config.optimizer.learning_rate == 0.001


def test_the_cli_prints_no_tensorflow_start_up_lines_and_no_bar_into_a_log(tmp_path):
    import os
    import subprocess
    import sys

    path = write(tmp_path, ONE_RUN.replace("epochs: 3", "epochs: 1"))
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run(
        [sys.executable, "-m", "keras_stability.cli", "run", path, "--results", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert completed.returncode == 0
    assert completed.stderr == ""  # no absl, CUDA, oneDNN or cuInit lines; no progress bar's "\r"
    assert completed.stdout.splitlines()[0].startswith("tiny/base/seed-0 epoch 1/1  loss ")
    # `verify` retrains too, with its own thread count, and is as quiet.
    verified = subprocess.run(
        [sys.executable, "-m", "keras_stability.cli", "verify", str(tmp_path / "r"), "--threads", "1"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert verified.returncode in (0, 1) and verified.stderr == ""
    assert "(1 thread)" in verified.stdout.splitlines()[0]


def test_a_new_model_per_trial_is_not_reported_as_retracing():
    import logging

    from keras_stability.experiments.evaluation import evaluate_arrays

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    seen, handler = [], Collect()
    tf.get_logger().addHandler(handler)
    try:
        x, y = np.zeros((8, 2), np.float32), np.zeros((8, 1), np.float32)
        for width in range(1, 8):  # as a search builds one model per trial
            model = stabilize(keras.Sequential([keras.Input((2,)), keras.layers.Dense(width), keras.layers.Dense(1)]))
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
            train_epoch(model, x, y, np.arange(8), 4)
            evaluate_arrays(model, x, y, 4)
    finally:
        tf.get_logger().removeHandler(handler)
    assert not [message for message in seen if "retracing" in message]


def test_ctrl_c_outside_a_run_is_one_line_too_and_the_run_error_pickles(tmp_path, monkeypatch, capsys):
    import pickle

    def interrupted(*arguments, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "run_one", interrupted)
    assert main(["run", write(tmp_path, ONE_RUN), "--results", str(tmp_path / "r"), "--no-progress"]) == 130
    assert stderr_lines(capsys) == ["keras-stability run: interrupted"]
    again = pickle.loads(pickle.dumps(RunInterrupted("a/b/seed-0", 3)))  # as a --jobs worker returns it
    assert (str(again), again.epochs_done) == (str(RunInterrupted("a/b/seed-0", 3)), 3)


def test_a_read_only_disk_is_named_and_nothing_is_created(tmp_path, monkeypatch, capsys):
    import errno

    from keras_stability.runs import storage

    def read_only(*arguments, **options):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".tmp-probe"))

    (tmp_path / "results").mkdir()
    monkeypatch.setattr(storage.tempfile, "mkstemp", read_only)  # as root, chmod cannot make one
    output = tmp_path / "reports" / "x"
    assert main(["report", str(tmp_path / "results"), "-o", str(output)]) == 1
    assert stderr_lines(capsys) == [f"keras-stability report: {output}: Read-only file system"]
    assert not (tmp_path / "reports").exists()


def test_a_real_sigint_prints_one_line_and_exits_130(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    path = write(tmp_path, ONE_RUN.replace("epochs: 3", "epochs: 200"))
    command = [sys.executable, "-m", "keras_stability.cli", "run", path, "--results", str(tmp_path / "r")]
    # SIGINT's default action back, as a terminal's foreground process has it (a shell's background job ignores it).
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    runner = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ, preexec_fn=restore_sigint
    )
    for line in runner.stdout:
        if line.startswith("tiny/base/seed-0 epoch 2/200"):
            runner.send_signal(signal.SIGINT)
            break
    _, errors = runner.communicate(timeout=120)
    assert runner.returncode == 130
    [line] = errors.splitlines()
    assert line.startswith("keras-stability run: tiny/base/seed-0: interrupted; running the same command again resumes")
    assert int(line.rpartition("after epoch ")[2]) >= 2  # the epoch the signal landed after


def test_a_hanging_name_look_up_still_fails_within_the_timeout(monkeypatch):
    import socket

    monkeypatch.setattr(download, "CONNECT_TIMEOUT_S", 1)
    monkeypatch.setattr(download, "_UNREACHABLE", {})
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(60))  # as DNS without network
    started = time.monotonic()
    with pytest.raises(DataError, match=r"no connection to storage\.googleapis\.com:443 \(no answer in 1 s\)"):
        download.check_download_host()
    with pytest.raises(DataError, match=r"no answer in 1 s"):  # the next run is told at once
        download.check_download_host()
    assert time.monotonic() - started < 5
