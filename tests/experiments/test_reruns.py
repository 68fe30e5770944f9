"""Results never stand for other code or another configuration: factory code changes retrain, a
failed run is retried with the fixed configuration, `--rerun PATTERN` retrains chosen runs."""

import json
import sys
import textwrap

import pytest

from keras_stability.cli import main
from keras_stability.config.loading import load_experiment
from keras_stability.experiments.runner import run_one

pytestmark = pytest.mark.slow  # trains many runs end to end

EXPERIMENT = """\
name: own
seeds: [0]
dataset: {name: mnist_small, train_size: 200}
model: {factory: "rerunmodels:build"}
optimizer: {name: sgd, learning_rate: 0.1}
training: {epochs: 1, batch_size: 100}
"""
MODELS = """\
import keras


def build(input_shape, num_classes, seed):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])


def on_fire(input_shape, num_classes, seed):
    raise RuntimeError("disk on fire")
"""


@pytest.fixture
def own(tmp_path, monkeypatch):
    (tmp_path / "rerunmodels.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("rerunmodels", None)


def run(directory, text):
    path = directory / "own.yaml"
    path.write_text(textwrap.dedent(text))
    ((variant, seed, config),) = load_experiment(str(path)).runs()
    lines = []
    status = run_one(str(directory / "results"), config, variant, seed, log=lines.append)
    return status, lines


def test_a_change_to_the_factory_code_retrains_and_says_what_changed(own):
    assert run(own, EXPERIMENT)[0] == "done"
    assert run(own, EXPERIMENT)[0] == "skipped"
    source = own / "rerunmodels.py"
    source.write_text(MODELS.replace("keras.layers.Flatten(),", "keras.layers.Flatten(), keras.layers.Dense(8),"))
    sys.modules.pop("rerunmodels")  # as a new process imports it
    status, lines = run(own, EXPERIMENT)
    assert status == "done", lines
    assert lines[0].startswith(f"own/base/seed-0: its factory code changed since it trained ({source}: SHA-256 ")
    assert lines[0].endswith("); training it again")
    meta = json.loads((own / "results" / "own" / "base" / "seed-0" / "meta.json").read_text())
    assert meta["model_factory"]["module_sha256"] == __import__("hashlib").sha256(source.read_bytes()).hexdigest()
    assert run(own, EXPERIMENT)[0] == "skipped"


def test_a_failed_run_is_retried_with_the_fixed_configuration(own):
    assert run(own, EXPERIMENT.replace("rerunmodels:build", "rerunmodels:on_fire"))[0] == "failed"
    status, lines = run(own, EXPERIMENT)
    assert status == "done"
    assert lines[0] == (
        "own/base/seed-0: its last attempt failed (RuntimeError: disk on fire); training the new configuration"
    )
    meta = json.loads((own / "results" / "own" / "base" / "seed-0" / "meta.json").read_text())
    assert meta["error"] is None and "traceback" not in meta


def test_another_finished_configuration_is_refused_with_the_command_that_retrains_it(own):
    assert run(own, EXPERIMENT)[0] == "done"
    status, lines = run(own, EXPERIMENT.replace("learning_rate: 0.1", "learning_rate: 0.2"))
    assert status == "failed"
    assert lines[-1].endswith(
        "holds a run of a different configuration; delete it, choose another --results directory, "
        "or retrain it: keras-stability run FILE --rerun own/base/seed-0"
    )


def test_rerun_retrains_the_runs_it_selects(tmp_path, capsys):
    path = tmp_path / "two.yaml"
    path.write_text(
        EXPERIMENT.replace('{factory: "rerunmodels:build"}', "{name: mlp, hidden: [4]}")
        + "variants:\n  a: {}\n  b: {optimizer: {learning_rate: 0.2}}\n"
    )
    results = str(tmp_path / "results")
    assert main(["run", str(path), "--results", results, "--no-progress"]) == 0
    capsys.readouterr()
    before = (tmp_path / "results" / "own" / "a" / "seed-0" / "metrics.csv").read_bytes()
    assert main(["run", str(path), "--results", results, "--no-progress", "--rerun", "own/a/*"]) == 0
    out = capsys.readouterr().out
    assert "own/a/seed-0: --rerun: discarding its results and training it from scratch" in out
    assert out.splitlines()[-1] == "runs: 1 done, 1 skipped"
    assert (tmp_path / "results" / "own" / "a" / "seed-0" / "metrics.csv").read_bytes() == before  # deterministic
    assert main(["run", str(path), "--results", results, "--rerun", "own/c/*"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "keras-stability run: --rerun own/c/*: matches no run (experiment/variant/seed-N)"
    ]


def test_the_main_command_leaves_git_status_empty_and_dirty_means_one_thing():
    import os
    import re
    import subprocess

    from keras_stability.runs.provenance import CODE_PATHS

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    command = re.search(
        r"^python3 -m venv \.venv && .*keras-stability run experiments/quickstart\.yaml.*$", readme, re.M
    )
    report = re.search(r"keras-stability report results/quickstart -o (\S+)", command.group(0))
    written = [
        "results/quickstart/no_clip/seed-0/meta.json",
        f"{report.group(1)}/report.md",
        "results/.trainings/0123456789abcdef0123",  # a new index link
    ]
    ignored = subprocess.run(["git", "check-ignore", *written], cwd=root, capture_output=True, text=True)
    assert ignored.stdout.split() == written
    script = open(os.path.join(root, "experiments", "reproduce.sh"), encoding="utf-8").read()
    checked = re.search(r"git status --porcelain --untracked-files=no -- ([^)]*)\)", script).group(1).split()
    assert tuple(checked) == CODE_PATHS
