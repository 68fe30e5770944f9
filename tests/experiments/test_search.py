"""Search: every sampler, divergence pruning, resuming a study, two workers on one PostgreSQL study."""

import contextlib
import glob
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import optuna
import pytest
from conftest import SMALL_RUN

from keras_stability.config.loading import ConfigError, load_experiment
from keras_stability.experiments.search import make_sampler, run_search, suggest, with_sampler

pytestmark = pytest.mark.slow  # trains many runs end to end

SEARCH = (
    """\
name: tiny
seeds: [0]
"""
    + SMALL_RUN
    + """\
stabilizer:
  transforms: [{name: clip_by_global_norm, max_norm: 1.0}]
search:
  sampler: SAMPLER
  trials: 3
  space:
    optimizer.learning_rate: {type: float, low: 0.01, high: 0.5, log: true, values: [0.05, 0.2]}
    stabilizer.transforms.0.max_norm: {type: float, low: 0.5, high: 5.0, values: [1.0]}
    model.activation: {type: categorical, choices: [relu, tanh]}
"""
)


def experiment(tmp_path, text=SEARCH, sampler="tpe"):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(text.replace("SAMPLER", sampler)))
    return load_experiment(str(path))


def quiet(_):
    pass


@pytest.mark.parametrize("sampler", ["grid", "random", "tpe", "gp"])
def test_each_sampler_finishes_and_reports_the_best_trial(tmp_path, sampler):
    if sampler == "gp":
        pytest.importorskip("torch", reason="Optuna's GPSampler needs PyTorch: pip install 'keras-stability[gp]'")
    study = run_search(experiment(tmp_path, sampler=sampler), str(tmp_path / "results"), log=quiet)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 3
    assert study.best_value == max(t.value for t in complete) and 0 < study.best_value <= 1
    # Trials are runs in the engine's layout: one directory per trial and seed, each finished.
    runs = sorted(glob.glob(str(tmp_path / "results" / "tiny-search" / "trial-*" / "seed-0" / "metrics.csv")))
    assert len(runs) == 3
    if sampler == "grid":  # 2 × 1 × 2 grid points, three of them visited, none twice
        assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3


def test_diverging_region_is_pruned_and_marked(tmp_path):
    text = (
        SEARCH.replace("low: 0.01, high: 0.5", "low: 200.0, high: 1000.0")
        .replace("transforms: [{name: clip_by_global_norm, max_norm: 1.0}]", "transforms: []")
        .replace("hidden: [8]", "hidden: [64, 64, 64]")
        .replace("choices: [relu, tanh]", "choices: [relu]")
        .replace("    stabilizer.transforms.0.max_norm: {type: float, low: 0.5, high: 5.0, values: [1.0]}\n", "")
    )
    study = run_search(experiment(tmp_path, text, "random"), str(tmp_path / "results"), trials=2, log=quiet)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(t.user_attrs["diverged"] for t in study.trials)


def test_rerun_continues_the_study_without_repeating_trials(tmp_path):
    search = experiment(tmp_path, sampler="random")
    first = run_search(search, str(tmp_path / "results"), trials=2, log=quiet)
    params = [t.params for t in first.trials]
    messages = []
    again = run_search(search, str(tmp_path / "results"), trials=2, log=messages.append)
    assert messages == ["study search: 2 trials finished already (budget 2)"]
    assert [t.params for t in again.trials] == params
    more = run_search(search, str(tmp_path / "results"), trials=3, log=quiet)
    assert [t.number for t in more.trials] == [0, 1, 2]
    assert [t.params for t in more.trials[:2]] == params


def test_search_section_is_validated(tmp_path):
    with pytest.raises(ConfigError) as error:
        experiment(tmp_path, SEARCH.replace(", values: [1.0]", ""), "grid")
    assert error.value.lines[0].endswith("search: the grid sampler needs `values` for stabilizer.transforms.0.max_norm")
    with pytest.raises(ConfigError) as error:
        experiment(tmp_path, SEARCH.replace("model.activation", "model.activaton"))
    assert error.value.lines[0].endswith(
        ":15:5: search.space.model.activaton: model.activaton: unknown key (did you mean 'activation'?)"
    )
    with pytest.raises(ConfigError) as error:
        experiment(tmp_path, SEARCH.replace("low: 0.01, high: 0.5", "low: 0.5, high: 0.01"))
    assert "search.space.optimizer.learning_rate: a float parameter needs `low` < `high`" in error.value.lines[0]


def test_sampler_given_on_the_command_line_replaces_the_files(tmp_path):
    study = run_search(
        experiment(tmp_path, sampler="tpe"), str(tmp_path / "results"), trials=2, sampler="random", log=quiet
    )
    assert isinstance(study.sampler.base, optuna.samplers.RandomSampler)
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(SEARCH.replace("SAMPLER", "tpe").replace(", values: [1.0]", "")))
    completed = subprocess.run(
        [sys.executable, "-m", "keras_stability.cli", "search", str(path), "--sampler", "grid"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == (
        f"{path}: --sampler grid: the grid sampler needs `values` for stabilizer.transforms.0.max_norm"
    )


def synthetic_study(search, trials):
    """`trials` trials of `search`'s sampler on a closed-form objective (no training), as parameter dicts."""
    study = optuna.create_study(sampler=make_sampler(search), direction="minimize")

    def objective(trial):
        for name, spec in search.space.items():
            suggest(trial, name, spec)
        return (math.log10(trial.params["optimizer.learning_rate"]) + 1) ** 2

    study.optimize(objective, trials)
    return [trial.params for trial in study.trials]


def test_startup_trials_let_tpe_model_after_them(tmp_path):
    tpe = experiment(tmp_path, sampler="tpe").search
    default = synthetic_study(tpe, 4)
    early = synthetic_study(tpe.model_copy(update={"startup_trials": 2}), 4)
    assert early[:2] == default[:2]  # the same seeded random start
    assert early[2:] != default[2:]  # then TPE's model, where Optuna's default (10) is still random
    with pytest.raises(ConfigError) as error:
        experiment(tmp_path, SEARCH.replace("trials: 3", "trials: 3\n  startup_trials: 2"), sampler="grid")
    assert error.value.lines[0].endswith("the grid sampler has no start-up phase. Received: startup_trials=2")
    with_startup = experiment(tmp_path, SEARCH.replace("trials: 3", "trials: 3\n  startup_trials: 2"))
    assert with_sampler(with_startup.search, "random").startup_trials is None
    assert with_sampler(with_startup.search, "gp").startup_trials == 2
    # The command line drops them too, so one file serves all three of doc 004's searches.
    completed = subprocess.run(
        [sys.executable, "-m", "keras_stability.cli", "search", str(tmp_path / "tiny.yaml"), "--sampler", "random"]
        + ["--trials", "1", "--results", str(tmp_path / "results"), "--report", str(tmp_path / "reports")],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1].startswith("study search: 1 complete")


def postgres_binaries():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


@contextlib.contextmanager
def postgres_server(password=None):
    """A throwaway PostgreSQL server on 127.0.0.1 (password authentication when `password` is given);
    yields its URL without a password."""
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it")
    pytest.importorskip("psycopg", reason="pip install 'keras-stability[postgres]'")
    # In /tmp itself: pytest's tmp_path is private to root, and the server runs as `postgres`.
    server_dir = pathlib.Path(tempfile.mkdtemp(prefix="keras-stability-pg-"))
    data = server_dir / "data"
    authentication = ["-A", "trust"]
    if password is not None:
        (server_dir / "password").write_text(password + "\n")
        authentication = ["-A", "scram-sha-256", f"--pwfile={server_dir / 'password'}"]
    as_user = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        for path in (server_dir, *server_dir.iterdir()):
            shutil.chown(path, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(
        [*as_user, f"{binaries}/initdb", "-D", str(data), *authentication, "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {server_dir} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*as_user, f"{binaries}/pg_ctl", "-D", str(data), "-o", options, "-w", "-l", str(server_dir / "log"), "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, f"{binaries}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(server_dir, ignore_errors=True)


@pytest.fixture
def postgres():
    with postgres_server() as url:
        yield url


def test_two_workers_share_one_study_through_postgresql(tmp_path, postgres):
    path = tmp_path / "tiny.yaml"
    path.write_text(SEARCH.replace("SAMPLER", "random").replace("trials: 3", "trials: 4"))
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [
        sys.executable,
        "-m",
        "keras_stability.cli",
        "search",
        str(path),
        "--storage",
        postgres,
        "--results",
        str(tmp_path / "results"),
        "--report",
        str(tmp_path / "reports"),
    ]
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [e[-3000:] for _, e in outputs]
    study = optuna.load_study(study_name="search", storage=postgres)
    numbers = [t.number for t in study.trials]
    assert (
        sorted(numbers) == list(range(len(numbers))) and 4 <= len(numbers) <= 5
    )  # a worker may start one more at the end
    finished = [
        t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) >= 4
    # Every trial ran once, in its own run directory, by one of the two workers.
    trained = [output.count("epoch 2/2") + output.count("pruned after epoch") for output, _ in outputs]
    assert sum(trained) == len(finished) and all(n >= 1 for n in trained)
    assert len(glob.glob(str(tmp_path / "results" / "tiny-search" / "trial-*"))) == len(numbers)
    assert os.path.exists(tmp_path / "reports" / "tiny-search" / "search.html")


def sample_trials(search, workers, trials):
    """`trials` trials drawn in turn by `workers` studies on one storage, each with its own sampler."""
    storage = optuna.storages.InMemoryStorage()
    studies = [
        optuna.create_study(study_name="s", storage=storage, sampler=sampler, load_if_exists=True)
        for sampler in workers
    ]
    for number in range(trials):
        study = studies[number % len(studies)]
        trial = study.ask()
        for name, spec in search.space.items():
            suggest(trial, name, spec)
        study.tell(trial, 0.5)
    return [tuple(sorted(t.params.items())) for t in studies[0].trials]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_workers_on_one_study_do_not_repeat_each_others_parameters(tmp_path, sampler):
    search = experiment(tmp_path, sampler=sampler).search
    drawn = sample_trials(search, [make_sampler(search), make_sampler(search)], 8)
    assert len(set(drawn)) == 8
    # One worker alone draws the same trials every time (and the same as two workers, trial by trial).
    assert sample_trials(search, [make_sampler(search)], 8) == drawn
    # What each worker did before: one sampler seeded alike per worker, so worker 2 repeated worker 1.
    if sampler == "random":
        repeated = sample_trials(
            search, [optuna.samplers.RandomSampler(seed=0), optuna.samplers.RandomSampler(seed=0)], 8
        )
        assert repeated[1] == repeated[0] and len(set(repeated)) == 4


def test_a_killed_workers_trial_is_retried_in_its_own_directory(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        SEARCH.replace("SAMPLER", "random")
        .replace("trials: 3", "trials: 4")
        .replace("train_size: 200", "train_size: 1000")
        .replace("epochs: 2", "epochs: 4")
        .replace("low: 0.01, high: 0.5", "low: 0.01, high: 0.05")
    )
    url = f"sqlite:///{tmp_path / 'study.db'}"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.getcwd()}
    command = [
        sys.executable,
        "-m",
        "keras_stability.cli",
        "search",
        str(path),
        "--storage",
        url,
        "--heartbeat",
        "1",
        "--results",
        str(tmp_path / "results"),
        "--report",
        str(tmp_path / "reports"),
    ]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [
        subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=environment) for log in logs
    ]
    while "epoch 1/4" not in logs[0].read_text():
        assert workers[0].poll() is None, logs[0].read_text()[-3000:]
        time.sleep(0.05)
    os.kill(workers[0].pid, signal.SIGKILL)
    assert workers[1].wait(timeout=300) == 0, logs[1].read_text()[-3000:]
    workers[0].wait()
    study = optuna.load_study(study_name="search", storage=url)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.WAITING not in states
    killed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(killed) == 1
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retry) == 1 and retry[0].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert retry[0].params == killed[0].params and retry[0].user_attrs["variant"] == killed[0].user_attrs["variant"]
    assert f"tiny-search/{killed[0].user_attrs['variant']}/seed-0: resuming after epoch" in logs[1].read_text()
    others = [tuple(sorted(t.params.items())) for t in study.trials if t not in retry]
    assert len(set(others)) == len(others)  # the two workers drew no parameters twice
    finished = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) >= 4
