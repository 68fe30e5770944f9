"""Results from Python: DataFrames against a real run's CSVs (the typed summary and ledger:
test_results_ledger.py)."""

import csv
import gzip
import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from keras_stability.config.loading import load_experiment
from keras_stability.experiments.runner import run_one
from keras_stability.results import IDENTITY_COLUMNS, flat_config, load_runs, load_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_quickstart(root, seeds):
    """The quickstart, one epoch, `seeds` of both variants, into the results directory `root`."""
    experiment = load_experiment(os.path.join(ROOT, "experiments", "quickstart.yaml"), ["training.epochs=1"])
    for variant, seed, config in experiment.runs():
        if seed in seeds:
            assert run_one(str(root), config, variant, seed, log=lambda _: None) == "done"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Seed 0 of both variants: a real results directory."""
    root = tmp_path_factory.mktemp("results")
    run_quickstart(root, [0])
    return root


def csv_table(path):
    opener = gzip.open if path.endswith(".gz") else open  # a finished run's steps.csv.gz
    with opener(path, "rt", newline="", encoding="utf-8") as stream:
        header, *rows = list(csv.reader(stream))
    return header, rows


def run_files(results, variant):
    directory = os.path.join(results, "quickstart", variant, "seed-0")
    with open(os.path.join(directory, "config.yaml"), encoding="utf-8") as stream:
        document = yaml.safe_load(stream)
    with open(os.path.join(directory, "meta.json"), encoding="utf-8") as stream:
        meta = json.load(stream)
    return directory, document, meta


def at_path(document, dotted):
    """The config.yaml value a `config.*` column names, as the frame holds it (lists as JSON text)."""
    value = document
    for key in dotted.split("."):
        value = value[key]
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def is_leaf(document, dotted):
    """Whether the run's configuration has this setting, not a section, at `dotted`."""
    value = document
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return not (isinstance(value, dict) and value)


def leaf_count(value):
    if isinstance(value, dict) and value:
        return sum(leaf_count(v) for v in value.values())
    return 1


def check_frame(frame, results, csv_name):
    variants = ["no_clip", "clip_global_norm_1"]  # the baseline first, as collect orders them
    header = csv_table(os.path.join(results, "quickstart", "no_clip", "seed-0", csv_name))[0]
    config_columns = [c for c in frame.columns if c.startswith("config.")]
    assert list(frame.columns) == [*IDENTITY_COLUMNS, *header, *config_columns]
    expected_rows = 0
    for variant in variants:
        directory, document, meta = run_files(results, variant)
        file_header, rows = csv_table(os.path.join(directory, csv_name))
        assert file_header == header
        part = frame[frame["variant"] == variant].reset_index(drop=True)
        assert len(part) == len(rows) > 0
        expected_rows += len(rows)
        # Every value as the CSV's text reads back (the runner writes the shortest float32 text).
        for i, name in enumerate(header):
            reference = [int(row[i]) if name in ("epoch", "step") else float(row[i]) for row in rows]
            assert part[name].tolist() == reference, name
        assert (part["experiment"] == "quickstart").all() and (part["seed"] == 0).all()
        assert meta["status"] == "done" and (part["status"] == "done").all()
        assert part["diverged_at_step"].isna().all() and meta["diverged_at_step"] is None
        assert (part["test_loss"] == meta["test"]["loss"]).all()
        assert (part["test_accuracy"] == meta["test"]["accuracy"]).all()
        # Every leaf of the resolved configuration has its column, holding the YAML's value; the
        # columns of the other variant's settings are empty.
        own = [c for c in config_columns if is_leaf(document, c)]
        assert len(own) == leaf_count(document["config"])
        for column in config_columns:
            value = part.loc[0, column]
            expected = at_path(document, column) if column in own else None
            assert (pd.isna(value) and expected is None) or value == expected, column
    assert len(frame) == expected_rows
    return frame


def test_load_runs_matches_metrics_csv(results):
    frame = check_frame(load_runs(results), results, "metrics.csv")
    assert list(frame.columns[: len(IDENTITY_COLUMNS) + 10]) == [
        "experiment",
        "variant",
        "seed",
        "status",
        "diverged_at_step",
        "nonfinite_steps_total",
        "test_loss",
        "test_accuracy",
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
    assert frame["epoch"].tolist() == [1, 1]
    assert frame.dtypes["seed"] == np.int64 and frame.dtypes["epoch"] == np.int64
    assert str(frame.dtypes["diverged_at_step"]) == "Int64"
    clipped = frame[frame["variant"] == "clip_global_norm_1"].iloc[0]
    assert clipped["config.optimizer.learning_rate"] == 0.1
    assert clipped["config.model.hidden"] == "[128, 64]"
    assert json.loads(clipped["config.stabilizer.transforms"]) == [{"name": "clip_by_global_norm", "max_norm": 1.0}]
    assert clipped["config.stabilizer.nonfinite"] == "propagate"  # the default, Keras's own
    # One experiment's directory and the results root hold the same runs.
    pd.testing.assert_frame_equal(load_runs(results / "quickstart"), frame)


def test_load_steps_matches_steps_csv(results):
    frame = check_frame(load_steps(results), results, "steps.csv.gz")
    assert list(frame.columns[len(IDENTITY_COLUMNS) : len(IDENTITY_COLUMNS) + 5]) == [
        "epoch",
        "step",
        "loss",
        "grad_norm",
        "clipped_norm",
    ]
    # mnist_small: 8,100 training digits in batches of 100.
    assert frame.groupby("variant")["step"].max().tolist() == [81, 81]


def test_unfinished_run_keeps_its_status(results, tmp_path):
    shutil.copytree(results / "quickstart" / "no_clip", tmp_path / "quickstart" / "no_clip")
    meta_path = tmp_path / "quickstart" / "no_clip" / "seed-0" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(status="running", test=None)
    meta_path.write_text(json.dumps(meta))
    # Interrupted after its first epoch: progress.json names the checkpoint to resume from (deleted
    # when the run finished, so made again here); its rows are the epochs progress.json records.
    progress = json.loads((meta_path.parent / "progress.json").read_text())
    (meta_path.parent / progress["checkpoint"]).write_bytes(b"")
    packed = meta_path.parent / "steps.csv.gz"  # an unfinished run's step log is plain: resuming cuts it by size
    (meta_path.parent / "steps.csv").write_bytes(gzip.decompress(packed.read_bytes()))
    packed.unlink()
    (row,) = [row for _, row in load_runs(tmp_path).iterrows()]
    assert row["status"] == "running" and math.isnan(row["test_loss"]) and math.isnan(row["test_accuracy"])
    assert row["epoch"] == progress["epochs_done"] == 1
    # Without progress.json it stopped before its first epoch ended: the rows there are not its own.
    (meta_path.parent / "progress.json").unlink()
    assert load_runs(tmp_path).empty


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No runs under"):
        load_runs(tmp_path)


def test_flat_config():
    config = {"a": {"b": 1, "c": [1, 2], "d": {}, "e": None}, "f": [{"name": "x", "v": 0.5}], "g": "text"}
    assert flat_config(config) == {
        "config.a.b": 1,
        "config.a.c": "[1, 2]",
        "config.a.d": "{}",
        "config.a.e": None,
        "config.f": '[{"name": "x", "v": 0.5}]',
        "config.g": "text",
    }
