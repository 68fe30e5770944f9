"""The report over damaged results: damaged runs are listed with their file and what to do, never averaged."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from test_integrity import make_finished_run

from keras_stability.report import build_reports, summarize
from keras_stability.report.collect import collect
from keras_stability.runs.integrity import RERUN_ADVICE


def copy_as_seed(source, seed):
    target = os.path.join(os.path.dirname(source), f"seed-{seed}")
    shutil.copytree(source, target)
    config = os.path.join(target, "config.yaml")
    text = open(config).read()
    open(config, "w").write(text.replace("\nseed: 0\n", f"\nseed: {seed}\n"))
    return target


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return make_finished_run(tmp_path_factory.mktemp("results"))


@pytest.fixture
def results(finished, tmp_path):
    """Seeds 0 and 1 sound (the same numbers); 2: metrics.csv cut in half; 3: meta.json not JSON;
    4: config.yaml not YAML."""
    seed_0 = str(tmp_path / "results" / "quickstart" / "no_clip" / "seed-0")
    shutil.copytree(finished, seed_0)
    copy_as_seed(seed_0, 1)
    damaged = {}
    for seed, name in ((2, "metrics.csv"), (3, "meta.json"), (4, "config.yaml")):
        path = os.path.join(copy_as_seed(seed_0, seed), name)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2] if name != "config.yaml" else b"experiment: [\n")
        damaged[seed] = path
    return str(tmp_path / "results"), damaged


def test_damaged_runs_are_listed_and_never_averaged(results, finished):
    root, damaged = results
    runs = collect(root)["quickstart"].variants["no_clip"]
    assert [(run.seed, run.status) for run in runs] == [
        (0, "done"),
        (1, "done"),
        (2, "damaged"),
        (3, "damaged"),
        (4, "damaged"),
    ]
    assert [run.damage.path for run in runs[2:]] == [damaged[2], damaged[3], damaged[4]]
    assert all(run.metrics == {} and run.steps == {} and run.meta == {} for run in runs[2:])

    summary = summarize(collect(root)["quickstart"])["variants"]["no_clip"]
    assert summary["runs"] == 5 and summary["finished"] == 2
    assert summary["unfinished"] == [{"seed": seed, "status": "damaged"} for seed in (2, 3, 4)]
    meta = json.load(open(os.path.join(finished, "meta.json")))
    test_accuracy = summary["metrics"]["test_accuracy"]
    assert test_accuracy["values"] == [meta["test"]["accuracy"]] * 2 and test_accuracy["n"] == 2


def test_report_names_each_damaged_file_and_what_to_do(results, tmp_path):
    root, damaged = results
    lines = []
    reports = build_reports(root, str(tmp_path / "report"), log=lines.append).pages
    assert os.path.exists(reports["quickstart"])
    with pytest.raises(json.JSONDecodeError) as cut_json:
        json.load(open(damaged[3]))
    error = cut_json.value
    assert lines[:3] == [
        f"{damaged[2]}: cut short: its last line is incomplete (listed as damaged, never averaged); {RERUN_ADVICE}",
        f"{damaged[3]}: not JSON: {error.msg} at line {error.lineno} column {error.colno} (listed as damaged, never "
        f"averaged); {RERUN_ADVICE}",
        f"{damaged[4]}: YAML syntax error: expected the node content, but found '<stream end>' (listed as damaged, "
        f"never averaged); {RERUN_ADVICE}",
    ]
    assert RERUN_ADVICE == "rerun `keras-stability run <experiment file>`: the runner retrains a damaged run"


def test_cli_report_over_damaged_results_exits_0_without_traceback(results, tmp_path):
    root, damaged = results
    completed = subprocess.run(
        [sys.executable, "-m", "keras_stability.cli", "report", root, "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    assert [line.split(": ")[0] for line in completed.stdout.splitlines()[:3]] == [damaged[2], damaged[3], damaged[4]]
    html = open(tmp_path / "out" / "quickstart" / "report.html", encoding="utf-8").read()
    assert "seed 2: damaged" in html and "seed 4: damaged" in html


def test_a_damaged_sweep_cell_keeps_its_experiment_and_variant_names(finished, tmp_path):
    # The names come from the directories when config.yaml is the damage; a cell lies a level deeper.
    cell = tmp_path / "results" / "quickstart" / "no_clip" / "learning_rate=0.1,batch_size=32" / "seed-7"
    shutil.copytree(finished, cell)
    (cell / "config.yaml").write_text("experiment: [\n")
    experiments = collect(str(tmp_path / "results"))
    assert list(experiments) == ["quickstart"]
    (run,) = experiments["quickstart"].variants["no_clip/learning_rate=0.1,batch_size=32"]
    assert (run.experiment, run.seed, run.status) == ("quickstart", 7, "damaged")
