"""The runner: exact files, determinism, kill -9 and resume, concurrent runners, divergence, the CLI."""

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

from keras_stability.config.loading import ConfigError, load_experiment
from keras_stability.experiments.runner import METRIC_COLUMNS, STEP_COLUMNS, run_one

TINY = """\
name: tiny
seeds: [0]
dataset: {name: mnist_small, train_size: 800}
model: {name: mlp, hidden: [16], dropout: 0.1}
optimizer: {name: sgd, learning_rate: 0.1, momentum: 0.9, schedule: {name: cosine}}
training: {epochs: 3, batch_size: 100}
variants:
  no_clip: {stabilizer: null}
  clipped:
    stabilizer:
      transforms: [{name: adaptive_clip, clip_factor: 0.05}, {name: zclip, warmup: 3}]
"""
DETERMINISTIC_FILES = ("metrics.csv", "steps.csv.gz", "config.yaml")


def experiment_file(tmp_path, text=TINY, **replacements):
    for old, new in replacements.items():
        text = text.replace(old, new)
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def cli(*arguments, **options):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "keras_stability.cli", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        **options,
    )


def run_all(path, results):
    for variant, seed, config in load_experiment(path).runs():
        run_one(str(results), config, variant, seed, log=lambda _: None)


def read(results, variant, name, seed=0):
    with open(os.path.join(results, "tiny", variant, f"seed-{seed}", name), "rb") as stream:
        return stream.read()


def read_steps(results, variant, seed=0):
    """A finished run's steps.csv, as its compacted steps.csv.gz holds it."""
    return gzip.decompress(read(results, variant, "steps.csv.gz", seed))


def test_files_and_columns(tmp_path):
    run_all(experiment_file(tmp_path), tmp_path / "results")
    directory = tmp_path / "results" / "tiny" / "clipped" / "seed-0"
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == [
        "config.yaml",
        "meta.json",
        "metrics.csv",
        "progress.json",
        "steps.csv.gz",
        "tensorboard",
        "timing.csv",
    ]
    metrics = read(tmp_path / "results", "clipped", "metrics.csv").decode().splitlines()
    assert (
        metrics[0].split(",")
        == list(METRIC_COLUMNS)
        == [
            "epoch",
            "train_loss",
            "train_accuracy",
            "val_loss",
            "val_accuracy",
            "grad_norm",
            "clipped_norm",
            "clip_rate",
            "nonfinite_steps",
            "lr",
        ]
    )
    assert [row.split(",")[0] for row in metrics[1:]] == ["1", "2", "3"]
    steps = read_steps(tmp_path / "results", "clipped").decode().splitlines()
    assert steps[0].split(",") == list(STEP_COLUMNS) == ["epoch", "step", "loss", "grad_norm", "clipped_norm"]
    assert len(steps) == 1 + 3 * 8 and steps[-1].startswith("3,24,")  # 800 examples / batch 100
    # Cosine decay over 24 steps: the last epoch ends at lr 0.
    assert float(metrics[-1].split(",")[-1]) == pytest.approx(0.0, abs=1e-7)
    meta = json.loads(read(tmp_path / "results", "clipped", "meta.json"))
    assert meta["status"] == "done" and meta["epochs_done"] == 3 and meta["diverged_at_step"] is None
    assert set(meta["versions"]) >= {"tensorflow", "keras", "numpy"} and "commit" in meta["git"]
    assert 0.2 < meta["test"]["accuracy"] <= 1.0
    config = yaml.safe_load(read(tmp_path / "results", "clipped", "config.yaml"))
    assert config["variant"] == "clipped" and config["config"]["stabilizer"]["transforms"][1]["warmup"] == 3


def test_two_runs_give_identical_bytes(tmp_path):
    path = experiment_file(tmp_path)
    run_all(path, tmp_path / "first")
    run_all(path, tmp_path / "second")
    for variant in ["no_clip", "clipped"]:
        for name in DETERMINISTIC_FILES:
            assert read(tmp_path / "first", variant, name) == read(tmp_path / "second", variant, name), (variant, name)


def test_results_do_not_depend_on_what_ran_before_in_the_process_nor_on_jobs(tmp_path):
    # The process keeps one compiled model per training shape and re-initialises it for each run;
    # here it first trains a run that is pruned after one epoch, then all runs in reverse order.
    path = experiment_file(tmp_path, TINY.replace("seeds: [0]", "seeds: [0, 1]"))
    runs = load_experiment(path).runs()
    variant, seed, config = runs[-1]
    assert (
        run_one(
            str(tmp_path / "pruned"), config, variant, seed, log=lambda _: None, on_epoch=lambda epoch, values: "enough"
        )
        == "pruned"
    )
    for variant, seed, config in reversed(runs):
        assert run_one(str(tmp_path / "reversed"), config, variant, seed, log=lambda _: None) == "done"
    jobs = cli("run", path, "--results", str(tmp_path / "jobs"), "--jobs", "2", "--no-progress")
    assert jobs.wait(timeout=300) == 0, jobs.stderr.read()
    for variant, seed, _ in runs:
        for name in DETERMINISTIC_FILES:
            assert read(tmp_path / "reversed", variant, name, seed) == read(tmp_path / "jobs", variant, name, seed), (
                variant,
                seed,
                name,
            )


def test_epochs_are_not_flushed_to_the_disk_but_the_runs_start_and_end_are(tmp_path, monkeypatch):
    flushed = []
    monkeypatch.setattr(os, "fsync", lambda descriptor: flushed.append(os.readlink(f"/proc/self/fd/{descriptor}")))
    counts = {}
    for epochs in (1, 3):
        path = experiment_file(tmp_path, TINY.replace("epochs: 3", f"epochs: {epochs}"))
        (variant, seed, config), *_ = load_experiment(path).runs()
        flushed.clear()
        assert run_one(str(tmp_path / f"epochs-{epochs}"), config, variant, seed, log=lambda _: None) == "done"
        counts[epochs] = sorted(os.path.basename(name).rsplit("-", 1)[-1] for name in flushed)
    # config.yaml, meta.json when the run starts and ends, steps.csv.gz: however many epochs.
    assert counts[1] == counts[3] == ["config.yaml", "meta.json", "meta.json", "steps.csv.gz"]


def test_finished_runs_are_skipped_and_conflicts_refused(tmp_path):
    path = experiment_file(tmp_path)
    run_all(path, tmp_path / "results")
    before = read(tmp_path / "results", "no_clip", "meta.json")
    (variant, seed, config), *_ = load_experiment(path).runs()
    # What a writer killed inside `atomic_write_bytes` leaves behind; the next runner removes it.
    stale = tmp_path / "results" / "tiny" / "no_clip" / "seed-0" / ".tmp-1234-checkpoint-epoch-0002.npz"
    stale.write_bytes(b"half a checkpoint")
    assert run_one(str(tmp_path / "results"), config, variant, seed, log=lambda _: None) == "skipped"
    assert read(tmp_path / "results", "no_clip", "meta.json") == before
    assert not stale.exists()
    changed = load_experiment(path, ["optimizer.learning_rate=0.2"]).variants["no_clip"]
    messages = []
    assert run_one(str(tmp_path / "results"), changed, "no_clip", 0, log=messages.append) == "failed"
    assert "holds a run of a different configuration" in messages[0]
    # More seeds, a new description or baseline change the experiment, not what this run trained.
    edited = load_experiment(path, ["seeds=[0, 1]", "description=edited", "baseline=clipped"]).variants["no_clip"]
    assert run_one(str(tmp_path / "results"), edited, "no_clip", 0, log=lambda _: None) == "skipped"
    assert read(tmp_path / "results", "no_clip", "meta.json") == before
    assert yaml.safe_load(read(tmp_path / "results", "no_clip", "config.yaml"))["config"]["description"] == "edited"


def test_divergence_is_recorded_and_others_go_on(tmp_path):
    text = TINY.replace(
        "learning_rate: 0.1, momentum: 0.9, schedule: {name: cosine}", "learning_rate: 1000.0, momentum: 0.9"
    )
    text = text.replace("hidden: [16], dropout: 0.1", "hidden: [64, 64, 64]")
    run_all(experiment_file(tmp_path, text), tmp_path / "results")
    diverged = json.loads(read(tmp_path / "results", "no_clip", "meta.json"))
    assert diverged["status"] == "diverged"
    assert 1 <= diverged["diverged_at_step"] <= 8  # within the first epoch
    assert diverged["epochs_done"] == 1  # stop_on_divergence
    # The first step whose loss or applied gradient is not finite; the loss alone can stay finite
    # after NaN reaches the weights (oneDNN's ReLU maps NaN to 0), so the gradient counts too.
    steps = [
        [float(v) for v in line.split(",")]
        for line in read_steps(tmp_path / "results", "no_clip").decode().splitlines()[1:]
    ]
    at = diverged["diverged_at_step"]
    assert all(math.isfinite(row[2]) and math.isfinite(row[3]) for row in steps[: at - 1])
    assert not (math.isfinite(steps[at - 1][2]) and math.isfinite(steps[at - 1][3]))
    clipped = json.loads(read(tmp_path / "results", "clipped", "meta.json"))
    assert clipped["status"] in ("done", "diverged") and clipped["epochs_done"] >= 1


def wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_kill_9_mid_run_then_resume_ends_identical(tmp_path):
    # 60 epochs of 40 steps (a few seconds): killed after epoch 2, far from the end even on a busy machine.
    path = experiment_file(
        tmp_path, TINY.replace("epochs: 3", "epochs: 60").replace("train_size: 800", "train_size: 4000")
    )
    reference = cli("run", path, "--results", str(tmp_path / "reference"), "--no-progress")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    victim = cli("run", path, "--results", str(tmp_path / "results"), "--no-progress")
    progress = tmp_path / "results" / "tiny" / "no_clip" / "seed-0" / "progress.json"
    wait_for(lambda: progress.exists() and json.loads(progress.read_text())["epochs_done"] >= 2)
    time.sleep(0.1)  # into the next epoch
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    meta = json.loads(read(tmp_path / "results", "no_clip", "meta.json"))
    assert meta["status"] == "running"  # what a kill -9 leaves: no chance to write more

    resumed = cli("run", path, "--results", str(tmp_path / "results"), "--no-progress")
    output, errors = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, errors
    assert "tiny/no_clip/seed-0: resuming after epoch" in output
    for variant in ["no_clip", "clipped"]:
        for name in DETERMINISTIC_FILES:
            assert read(tmp_path / "results", variant, name) == read(tmp_path / "reference", variant, name), (
                variant,
                name,
            )
        assert json.loads(read(tmp_path / "results", variant, "meta.json"))["status"] == "done"
    leftovers = [p for p in (tmp_path / "results").rglob("*") if p.name.startswith(".tmp-") or p.suffix == ".keras"]
    assert leftovers == []


def test_concurrent_runners_share_one_results_directory(tmp_path):
    path = experiment_file(tmp_path, TINY.replace("seeds: [0]", "seeds: [0, 1]"))
    runners = [cli("run", path, "--results", str(tmp_path / "results"), "--no-progress") for _ in range(2)]
    outputs = [runner.communicate(timeout=300) for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0], [e for _, e in outputs]
    run_all(path, tmp_path / "reference")
    for variant in ["no_clip", "clipped"]:
        for seed in [0, 1]:
            meta = json.loads(read(tmp_path / "results", variant, "meta.json", seed))
            assert meta["status"] == "done"
            for name in DETERMINISTIC_FILES:
                assert read(tmp_path / "results", variant, name, seed) == read(
                    tmp_path / "reference", variant, name, seed
                )
    # Each of the four runs was trained by exactly one of the two processes.
    trained = sum(output.count("epoch 3/3") for output, _ in outputs)
    assert trained == 4


def test_cli_run_end_to_end_with_overrides_and_jobs(tmp_path):
    path = experiment_file(tmp_path)
    runner = cli("run", path, "--results", str(tmp_path / "results"), "--set", "training.epochs=2", "--jobs", "2")
    output, errors = runner.communicate(timeout=300)
    assert runner.returncode == 0, errors
    assert output.strip().splitlines()[-1] == "runs: 2 done"
    assert "runs: " not in errors and "\r" not in errors  # no progress bar into a pipe: only on a terminal
    metrics = read(tmp_path / "results", "clipped", "metrics.csv").decode().splitlines()
    assert len(metrics) == 3
    again = cli("run", path, "--results", str(tmp_path / "results"), "--set", "training.epochs=2", "--no-progress")
    assert again.communicate(timeout=300)[0].strip().splitlines()[-1] == "runs: 2 skipped"


def test_cli_help_matches_the_command_line_page():
    environment = {**os.environ, "COLUMNS": "100"}
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "cli.md"), encoding="utf-8") as stream:
        page = stream.read()
    commands = ["run", "validate", "search", "sweep", "report", "verify", "compact", "list", "demo"]
    for arguments in [["--help"]] + [[command, "--help"] for command in commands]:
        completed = subprocess.run(
            [sys.executable, "-m", "keras_stability.cli", *arguments], capture_output=True, text=True, env=environment
        )
        assert completed.returncode == 0
        # docs/cli.md quotes every command's help verbatim (argparse names the program after the command).
        assert f"```\n{completed.stdout.replace('cli.py', 'keras-stability')}```" in page, arguments


def test_mirrored_training_equals_one_device(tmp_path, two_replicas):
    path = experiment_file(tmp_path, TINY.replace("hidden: [16], dropout: 0.1", "hidden: [16]"))
    single = load_experiment(path, ["training.epochs=2"])
    mirrored = load_experiment(path, ["training.epochs=2", "training.distribute=mirrored", "training.logical_cpus=2"])
    for experiment, root in [(single, tmp_path / "single"), (mirrored, tmp_path / "mirrored")]:
        for variant, seed, config in experiment.runs():
            assert run_one(str(root), config, variant, seed, log=lambda _: None) == "done"
    for variant in ["no_clip", "clipped"]:
        for name in ["metrics.csv", "steps.csv.gz"]:  # genfromtxt decompresses a .gz by its name
            a, b = (
                np.genfromtxt(root / "tiny" / variant / "seed-0" / name, delimiter=",", skip_header=1)
                for root in (tmp_path / "single", tmp_path / "mirrored")
            )
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6, err_msg=f"{variant} {name}")


def test_multi_worker_is_refused_with_what_to_do(tmp_path):
    path = experiment_file(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_experiment(path, ["training.distribute=multi_worker"])
    (line,) = error.value.lines
    assert line.startswith("--set training.distribute=multi_worker: ") and "multi-worker training was removed" in line
    assert "keras-stability sweep" in line
