"""Sweeps: cells and their names, validation at the grid's keys and values, runs on one machine, and two
workers sharing the runs through a database, one of them killed with SIGKILL mid-run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
import yaml
from conftest import SMALL_RUN
from test_search import postgres  # noqa: F401  (fixture)

from keras_stability.config.loading import ConfigError, load_experiment
from keras_stability.config.sweep import short_keys, value_text
from keras_stability.experiments.suite import run_experiments
from keras_stability.report.collect import collect

SWEEP = (
    """\
name: tiny
seeds: [0, 1]
baseline: plain
"""
    + SMALL_RUN
    + """\
variants:
  plain: {}
  clip:
    stabilizer: {transforms: [{name: clip_by_global_norm, max_norm: 1.0}]}
sweep:
  variants: [clip]
  grid:
    optimizer.learning_rate: [0.05, 0.5]
    stabilizer.transforms.0.max_norm: [0.5, 2]
"""
)


def write(tmp_path, text=SWEEP, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_cells_cross_the_grid_with_the_listed_variants(tmp_path):
    experiment = load_experiment(str(write(tmp_path)))
    assert list(experiment.variants) == [
        "plain",
        "clip/learning_rate=0.05,max_norm=0.5",
        "clip/learning_rate=0.05,max_norm=2",
        "clip/learning_rate=0.5,max_norm=0.5",
        "clip/learning_rate=0.5,max_norm=2",
    ]
    assert len(experiment.runs()) == 5 * 2 and experiment.baseline == "plain"
    cell = experiment.variants["clip/learning_rate=0.5,max_norm=0.5"]
    assert cell.optimizer.learning_rate == 0.5 and cell.stabilizer.transforms[0].max_norm == 0.5
    assert cell.training == experiment.variants["plain"].training
    # Without `variants:` every variant is swept, and the baseline becomes its first cell.
    everywhere = load_experiment(
        str(
            write(
                tmp_path,
                SWEEP.replace("  variants: [clip]\n", "").replace(
                    "    stabilizer.transforms.0.max_norm: [0.5, 2]\n", ""
                ),
            )
        )
    )
    assert list(everywhere.variants) == [
        "plain/learning_rate=0.05",
        "plain/learning_rate=0.5",
        "clip/learning_rate=0.05",
        "clip/learning_rate=0.5",
    ]
    assert everywhere.baseline == "plain/learning_rate=0.05"


def test_cell_names_use_the_shortest_distinct_key_suffix_and_yaml_spelling():
    assert short_keys(
        ["optimizer.learning_rate", "stabilizer.transforms.0.max_norm", "stabilizer.transforms.1.max_norm"]
    ) == {
        "optimizer.learning_rate": "learning_rate",
        "stabilizer.transforms.0.max_norm": "0.max_norm",
        "stabilizer.transforms.1.max_norm": "1.max_norm",
    }
    assert [value_text(v) for v in (0.1, 1e-05, 3, True, None, "he_normal")] == [
        "0.1",
        "1e-05",
        "3",
        "true",
        "null",
        "he_normal",
    ]
    chain = [{"name": "clip_by_value", "limit": 0.1}]
    assert value_text(chain) == value_text([{"limit": 0.1, "name": "clip_by_value"}]) and value_text(chain).startswith(
        "h"
    )


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            ("optimizer.learning_rate: [", "optimizer.learning_rat: ["),
            ":15:5: optimizer.learning_rat: unknown key (did you mean 'learning_rate'?) (variant clip)",
        ),
        (
            ("[0.5, 2]", "[0.5, -2]"),
            ":16:45: stabilizer.transforms.0.max_norm: Input should be greater than 0 (variant clip)",
        ),
        (
            ("variants: [clip]", "variants: [clip, clap]"),
            ":13:20: sweep.variants.1: no variant named 'clap' (did you mean 'clip'?)",
        ),
        (
            ("optimizer.learning_rate: [", "seeds: ["),
            ":15:5: sweep.grid.seeds: a sweep varies a dotted setting inside dataset, model, optimizer, stabilizer, training, "
            "e.g. optimizer.learning_rate. Received: 'seeds'",
        ),
        (
            ("[0.5, 2]", "[0.5, 0.5]"),
            ":16:39: sweep.grid.stabilizer.transforms.0.max_norm: sweep values must differ. Received: "
            "[0.5, 0.5] (repeats 0.5)",
        ),
    ],
)
def test_sweep_errors_are_one_line_at_the_key_or_value(tmp_path, edit, expected):
    path = write(tmp_path, SWEEP.replace(*edit))
    with pytest.raises(ConfigError) as error:
        load_experiment(str(path))
    assert error.value.lines == [f"{path}{expected}"]


def test_validate_command_prints_the_line_and_exits_2(tmp_path, capsys):
    from keras_stability.cli import main

    path = write(tmp_path, SWEEP.replace("variants: [clip]", "variants: [clip, plain]"))
    assert main(["validate", str(path)]) == 2
    # `plain` has no transform 0: the grid's key is where the problem shows.
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:16:5: stabilizer.transforms: Input should be a valid list (variant plain)"
    ]


def test_cells_run_resumably_into_the_experiments_directory(tmp_path):
    experiment = load_experiment(str(write(tmp_path, SWEEP.replace("seeds: [0, 1]", "seeds: [0]"))))
    results = str(tmp_path / "results")
    assert run_experiments([experiment], results, show_progress=False) == {"done": 5}
    directory = tmp_path / "results" / "tiny" / "clip" / "learning_rate=0.5,max_norm=2" / "seed-0"
    document = yaml.safe_load((directory / "config.yaml").read_text())
    assert document["variant"] == "clip/learning_rate=0.5,max_norm=2"
    assert document["config"]["optimizer"]["learning_rate"] == 0.5
    assert document["config"]["stabilizer"]["transforms"][0]["max_norm"] == 2.0
    metrics = (directory / "metrics.csv").read_bytes()
    assert run_experiments([experiment], results, show_progress=False) == {"skipped": 5}
    assert (directory / "metrics.csv").read_bytes() == metrics
    # The report reads the cells as variants of the one experiment, with their swept values.
    (collected,) = collect(results).values()
    assert collected.name == "tiny" and sorted(collected.variants) == sorted(experiment.variants)
    (run,) = collected.variants["clip/learning_rate=0.5,max_norm=2"]
    assert run.config["optimizer"]["learning_rate"] == 0.5 and run.status == "done"


def start_worker(path, results, url, log):
    command = [
        sys.executable,
        "-m",
        "keras_stability.cli",
        "sweep",
        str(path),
        "--results",
        str(results),
        "--storage",
        url,
        "--heartbeat",
        "1",
    ]
    # Unbuffered: the test kills a worker when its log shows it inside a run.
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.getcwd(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=environment)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_workers_finish_every_run_once_when_one_is_killed(tmp_path, database, request):
    url = f"sqlite:///{tmp_path / 'sweep.db'}" if database == "sqlite" else request.getfixturevalue("postgres")
    # 20 epochs of a few milliseconds each: long enough for the kill to land inside a run.
    text = SWEEP.replace("train_size: 200", "train_size: 1000").replace("epochs: 2", "epochs: 20")
    path = write(
        tmp_path,
        text.replace("  variants: [clip]\n", "").replace("    stabilizer.transforms.0.max_norm: [0.5, 2]\n", ""),
    )
    results, logs = tmp_path / "results", [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start_worker(path, results, url, log) for log in logs]
    deadline = time.monotonic() + 300
    while "epoch 1/20" not in logs[0].read_text():  # the first worker is inside a run: kill it there
        assert workers[0].poll() is None and time.monotonic() < deadline, logs[0].read_text()[-3000:]
        time.sleep(0.01)
    os.kill(workers[0].pid, signal.SIGKILL)
    assert workers[1].wait(timeout=300) == 0, logs[1].read_text()[-3000:]
    workers[0].wait()

    study = optuna.load_study(study_name="tiny-sweep", storage=url)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.WAITING not in states
    experiment = load_experiment(str(path))
    labels = [f"{variant}/seed-{seed}" for variant, seed, _ in experiment.runs()]
    complete = sorted(t.user_attrs["run"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert complete == sorted(labels)  # every run finished, exactly once
    killed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(killed) == 1
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert [t.state for t in retry] == [optuna.trial.TrialState.COMPLETE]
    assert retry[0].user_attrs["run"] == killed[0].user_attrs["run"]
    # The survivor resumed the killed run from its checkpoint; no run trained its last epoch twice.
    output = logs[0].read_text() + logs[1].read_text()
    assert f"tiny/{killed[0].user_attrs['run']}: resuming after epoch" in logs[1].read_text()
    for label in labels:
        assert output.count(f"tiny/{label} epoch 20/20") == 1, label
        meta = yaml.safe_load((results / "tiny" / label / "meta.json").read_text())
        assert meta["status"] == "done"
