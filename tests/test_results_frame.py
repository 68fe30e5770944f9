"""Results from Python: DataFrames against a real run's CSVs, typed summary and ledger against reports/."""

import csv
import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

import keras_stability as ks
from keras_stability.experiments.loading import load_experiment
from keras_stability.experiments.runner import run_one
from keras_stability.report.statistics import Comparison, Estimate
from keras_stability.results import IDENTITY_COLUMNS, flat_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The quickstart, one epoch, seed 0 of both variants: a real results directory."""
    root = tmp_path_factory.mktemp("results")
    experiment = load_experiment(os.path.join(ROOT, "experiments", "quickstart.yaml"), ["training.epochs=1"])
    for variant, seed, config in experiment.runs():
        if seed == 0:
            assert run_one(str(root), config, variant, seed, log=lambda _: None) == "done"
    return root


def csv_table(path):
    with open(path, newline="", encoding="utf-8") as stream:
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
    frame = check_frame(ks.load_runs(results), results, "metrics.csv")
    assert list(frame.columns[: len(IDENTITY_COLUMNS) + 10]) == [
        "experiment", "variant", "seed", "status", "diverged_at_step", "test_loss", "test_accuracy",
        "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
        "grad_norm", "clipped_norm", "clip_rate", "nonfinite_steps", "lr",
    ]
    assert frame["epoch"].tolist() == [1, 1]
    assert frame.dtypes["seed"] == np.int64 and frame.dtypes["epoch"] == np.int64
    assert str(frame.dtypes["diverged_at_step"]) == "Int64"
    clipped = frame[frame["variant"] == "clip_global_norm_1"].iloc[0]
    assert clipped["config.optimizer.learning_rate"] == 0.1
    assert clipped["config.model.hidden"] == "[128, 64]"
    assert json.loads(clipped["config.stabilizer.transforms"]) == [{"name": "clip_by_global_norm", "max_norm": 1.0}]
    assert clipped["config.stabilizer.nonfinite"] == "skip"
    # One experiment's directory and the results root hold the same runs.
    pd.testing.assert_frame_equal(ks.load_runs(results / "quickstart"), frame)


def test_load_steps_matches_steps_csv(results):
    frame = check_frame(ks.load_steps(results), results, "steps.csv")
    assert list(frame.columns[len(IDENTITY_COLUMNS): len(IDENTITY_COLUMNS) + 5]) == [
        "epoch", "step", "loss", "grad_norm", "clipped_norm"
    ]
    # mnist_small: 8,100 training digits in batches of 100.
    assert frame.groupby("variant")["step"].max().tolist() == [81, 81]


def test_unfinished_run_keeps_its_status(results, tmp_path):
    shutil.copytree(results / "quickstart" / "no_clip", tmp_path / "quickstart" / "no_clip")
    meta_path = tmp_path / "quickstart" / "no_clip" / "seed-0" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(status="running", test=None)
    meta_path.write_text(json.dumps(meta))
    # A finished run's progress.json names the checkpoint deleted when it finished: as a running run's,
    # it would be damaged (nothing to resume from), so this run has not reached its checkpoint yet.
    (meta_path.parent / "progress.json").unlink()
    row = ks.load_runs(tmp_path).iloc[0]
    assert row["status"] == "running" and math.isnan(row["test_loss"]) and math.isnan(row["test_accuracy"])


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No runs under"):
        ks.load_runs(tmp_path)


def test_flat_config():
    config = {"a": {"b": 1, "c": [1, 2], "d": {}, "e": None}, "f": [{"name": "x", "v": 0.5}], "g": "text"}
    assert flat_config(config) == {
        "config.a.b": 1, "config.a.c": "[1, 2]", "config.a.d": "{}", "config.a.e": None,
        "config.f": '[{"name": "x", "v": 0.5}]', "config.g": "text",
    }


def test_read_summary_against_committed_json():
    with open(os.path.join(ROOT, "reports", "quickstart", "summary.json"), encoding="utf-8") as stream:
        data = json.load(stream)
    summary = ks.read_summary(os.path.join(ROOT, "reports", "quickstart"))
    assert summary == ks.read_summary(os.path.join(ROOT, "reports", "quickstart", "summary.json"))
    assert (summary.experiment, summary.baseline) == ("quickstart", "no_clip") and summary.raw == data
    assert list(summary.variants) == list(data["variants"])
    for name, variant in summary.variants.items():
        raw = data["variants"][name]
        assert (variant.variant, variant.runs, variant.finished, variant.diverged) == (
            name, raw["runs"], raw["finished"], raw["diverged"])
        assert list(variant.diverged_at_steps) == raw["diverged_at_steps"] and variant.unfinished == ()
        assert variant.grad_norm_max == raw["grad_norm_max"] and variant.grad_norm_median == raw["grad_norm_median"]
        assert variant.clip_share == Estimate(raw["clip_share"]["mean"], raw["clip_share"]["ci"], raw["clip_share"]["n"])
        assert variant.seconds_per_epoch.n == raw["seconds_per_epoch"]["n"] == 2
        assert list(variant.metrics) == list(raw["metrics"])
        for metric, value in variant.metrics.items():
            expected = raw["metrics"][metric]
            assert (value.mean, value.ci, value.n, list(value.values), value.excluded) == (
                expected["mean"], expected["ci"], expected["n"], expected["values"], expected["excluded"])
    test_accuracy = summary.variants["no_clip"].metrics["test_accuracy"]
    assert test_accuracy.mean == pytest.approx(np.mean(test_accuracy.values), rel=1e-12)
    assert test_accuracy.text(4) == f"{test_accuracy.mean:.4f} ± {test_accuracy.ci:.4f} (n=2)"
    comparisons = summary.comparisons["clip_global_norm_1"]
    assert list(comparisons) == list(data["comparisons"]["clip_global_norm_1"])
    raw = data["comparisons"]["clip_global_norm_1"]["test_accuracy"]
    assert comparisons["test_accuracy"] == Comparison(raw["difference"], raw["ci"], raw["p_value"], "Welch t", raw["alpha"])
    # The README quotes this comparison: −0.0100 ± 0.0205 (p = 0.16).
    assert comparisons["test_accuracy"].text().startswith("-0.0100 ± 0.0205 (p = 0.159")
    assert comparisons["divergence_rate"].test == "Fisher exact" and math.isnan(comparisons["divergence_rate"].ci)


def strict(value):
    """`value` with every NaN as None, as strict JSON writes it."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def test_read_summary_strict_json_and_new_fields(tmp_path):
    with open(os.path.join(ROOT, "reports", "quickstart", "summary.json"), encoding="utf-8") as stream:
        data = json.load(stream)
    data["provenance"] = {"commit": "abc"}
    data["variants"]["no_clip"]["new_analysis"] = [1, 2]
    (tmp_path / "summary.json").write_text(json.dumps(strict(data), allow_nan=False))
    summary = ks.read_summary(tmp_path)
    assert math.isnan(summary.comparisons["clip_global_norm_1"]["divergence_rate"].ci)
    assert summary.raw["provenance"] == {"commit": "abc"}
    assert summary.variants["no_clip"].raw["new_analysis"] == [1, 2]


def same(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


def test_read_ledger_against_committed_json():
    with open(os.path.join(ROOT, "reports", "claims.json"), encoding="utf-8") as stream:
        data = json.load(stream)
    ledger = ks.read_ledger(os.path.join(ROOT, "reports"))
    assert len(ledger) == len(data) == 39
    for verdict, raw in zip(ledger, data):
        assert verdict.raw == raw and verdict.claim.model_dump() == raw["claim"]
        assert (verdict.verdict, verdict.reason) == (raw["verdict"], raw["reason"])
        if raw["comparison"] is None:
            assert verdict.comparison is None
            continue
        tested, typed = raw["comparison"], verdict.comparison
        assert typed.baseline == tested["baseline"] and typed.test == tested["test"]
        for name in ("difference", "ci", "p_value", "alpha"):
            assert same(getattr(typed, name), tested[name]), name
        # Claims that could not be tested have no adjusted p-value.
        assert same(typed.p_adjusted, tested.get("p_adjusted", math.nan))
    # claims.md's tally, derived from the typed records.
    tally = {v: sum(1 for entry in ledger if entry.verdict == v) for v in ("confirmed", "refuted", "inconclusive")}
    with open(os.path.join(ROOT, "reports", "claims.md"), encoding="utf-8") as stream:
        assert ", ".join(f"{n} {v}" for v, n in tally.items()) + "." in stream.read()
    first = ledger[0]
    assert first.claim.id == "quickstart-clip-stability" and first.comparison.baseline == "no_clip"
    assert first.comparison.p_adjusted == 1.0 and first.verdict == "inconclusive"
