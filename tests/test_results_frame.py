"""Results from Python: DataFrames against a real run's CSVs; the typed summary and ledger against a
report built from real runs, their numbers against the runs' own files."""

import csv
import gzip
import json
import math
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

import keras_stability as ks
from keras_stability.experiments.loading import load_experiment
from keras_stability.experiments.runner import run_one
from keras_stability.report.analyses import analyse
from keras_stability.report.boundary import Cell
from keras_stability.report.build import build_reports
from keras_stability.report.claims import load_claims
from keras_stability.report.collect import collect
from keras_stability.report.outcomes import TRAINED_RULE
from keras_stability.report.provenance import Registration
from keras_stability.report.statistics import Comparison, compare_means
from keras_stability.results import IDENTITY_COLUMNS, flat_config, from_json

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
    frame = check_frame(ks.load_runs(results), results, "metrics.csv")
    assert list(frame.columns[: len(IDENTITY_COLUMNS) + 10]) == [
        "experiment",
        "variant",
        "seed",
        "status",
        "diverged_at_step",
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
    assert clipped["config.stabilizer.nonfinite"] == "skip"
    # One experiment's directory and the results root hold the same runs.
    pd.testing.assert_frame_equal(ks.load_runs(results / "quickstart"), frame)


def test_load_steps_matches_steps_csv(results):
    frame = check_frame(ks.load_steps(results), results, "steps.csv.gz")
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
    (row,) = [row for _, row in ks.load_runs(tmp_path).iterrows()]
    assert row["status"] == "running" and math.isnan(row["test_loss"]) and math.isnan(row["test_accuracy"])
    assert row["epoch"] == progress["epochs_done"] == 1
    # Without progress.json it stopped before its first epoch ended: the rows there are not its own.
    (meta_path.parent / "progress.json").unlink()
    assert ks.load_runs(tmp_path).empty


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No runs under"):
        ks.load_runs(tmp_path)


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


CLAIMS = """\
claims:
  - {id: accuracy, text: Clipping raises test accuracy., source: test, experiment: quickstart,
     metric: test_accuracy, variant: clip_global_norm_1, expect: higher}
  - {id: divergence, text: Clipping makes fewer runs diverge., source: test, experiment: quickstart,
     metric: divergence_rate, variant: clip_global_norm_1, expect: lower, exploratory: true}
  - {id: boundary, text: Clipping stabilises training., source: test, experiment: quickstart,
     analysis: boundary, variant: clip_global_norm_1, expect: higher}
  - {id: threshold, text: Clipping beats no clipping at a matched clip rate., source: test, experiment: quickstart,
     analysis: threshold, clip_rate: 0.5, variant: clip_global_norm_1, expect: higher}
  - {id: elsewhere, text: An experiment without results., source: test, experiment: nowhere,
     metric: test_loss, variant: a, expect: lower}
"""
LATE = """\
  - {id: late, text: Registered after the runs., source: test, experiment: quickstart,
     metric: final_val_loss, variant: clip_global_norm_1, expect: lower}
"""


def git(directory, *arguments):
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    command = ["git", "-C", str(directory), *identity, *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    """A report built by the current code from seeds 0 and 1 of the quickstart, with a claims file
    committed to git (and one claim added after the commit)."""
    root = tmp_path_factory.mktemp("report")
    shutil.copytree(results, root / "results")
    run_quickstart(root / "results", [1])
    claims = root / "claims" / "claims.yaml"
    claims.parent.mkdir()
    claims.write_text(CLAIMS)
    git(claims.parent, "init", "-q")
    git(claims.parent, "add", "claims.yaml")
    git(claims.parent, "commit", "-q", "-m", "claims")
    claims.write_text(CLAIMS + LATE)
    results_dir, output = str(root / "results" / "quickstart"), str(root / "report")
    verdicts = build_reports(results_dir, output, str(claims), log=lambda _: None).verdicts
    return root, verdicts


def seed_values(root, variant, read):
    """`read(meta, metrics rows)` for seeds 0 and 1 of `variant`, from the run's own files."""
    values = []
    for seed in (0, 1):
        directory = os.path.join(root, "results", "quickstart", variant, f"seed-{seed}")
        with open(os.path.join(directory, "meta.json"), encoding="utf-8") as stream:
            meta = json.load(stream)
        with open(os.path.join(directory, "metrics.csv"), newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
        values.append(read(meta, rows))
    return values


def test_read_summary_types_what_the_report_writes(report):
    root, _ = report
    directory = root / "report"
    data = json.loads((directory / "summary.json").read_text(), parse_constant=pytest.fail)  # strict: no NaN
    summary = ks.read_summary(directory)
    assert summary == ks.read_summary(directory / "summary.json") and summary.raw == data
    assert (summary.experiment, summary.baseline, summary.trained_rule) == ("quickstart", "no_clip", TRAINED_RULE)
    assert summary.description == data["description"] and list(summary.variants) == list(data["variants"])
    assert set(summary.variants) == {"no_clip", "clip_global_norm_1"}
    tests = {}
    for name, variant in summary.variants.items():
        assert variant.raw == data["variants"][name]
        assert (variant.variant, variant.runs, variant.finished, variant.unfinished) == (name, 2, 2, ())
        assert (variant.diverged, variant.diverged_at_steps) == (0, ())
        # Every metric of the report, with its values in seed order.
        assert list(variant.metrics) == list(data["variants"][name]["metrics"])
        tests[name] = seed_values(root, name, lambda meta, _: meta["test"]["accuracy"])
        accuracy = variant.metrics["test_accuracy"]
        assert (accuracy.values, accuracy.n, accuracy.excluded) == (tuple(tests[name]), 2, 0)
        assert accuracy.mean == pytest.approx(np.mean(tests[name]), rel=1e-12)
        # 95 % t-interval, n = 2: t(0.975, 1) · s / √2.
        half_width = stats.t.ppf(0.975, 1) * np.std(tests[name], ddof=1) / math.sqrt(2)
        assert accuracy.ci == pytest.approx(half_width, rel=1e-12)
        # Trained: not diverged and test accuracy ≥ chance 0.1 + 0.1.
        assert variant.trained == sum(a >= 0.2 for a in tests[name])
        shares = seed_values(root, name, lambda _, rows: float(rows[0]["clip_rate"]))
        assert variant.clip_share.mean == pytest.approx(np.mean(shares), rel=1e-12) and variant.clip_share.n == 2
        assert variant.seconds_per_epoch.n == 2 and variant.seconds_per_epoch.mean > 0
        assert 0 < variant.grad_norm_median <= variant.grad_norm_max
    assert summary.variants["no_clip"].clip_share.mean == 0.0
    # The comparisons, as the report's tests compute them from the seeds' values.
    compared = summary.comparisons["clip_global_norm_1"]
    assert list(summary.comparisons) == ["clip_global_norm_1"]
    assert list(compared) == list(data["comparisons"]["clip_global_norm_1"])
    clipped, unclipped = tests["clip_global_norm_1"], tests["no_clip"]
    assert compared["test_accuracy"] == compare_means(clipped, unclipped)
    assert compared["test_accuracy"].difference == pytest.approx(np.mean(clipped) - np.mean(unclipped), rel=1e-12)
    permutation = stats.permutation_test(
        (clipped, unclipped), lambda a, b: np.mean(a) - np.mean(b), permutation_type="independent"
    )
    assert compared["test_accuracy"].p_value == pytest.approx(permutation.pvalue, rel=1e-12)
    # No run diverged on either side: no difference, p = 1, no seeds to ask for (null in the file).
    rate = compared["divergence_rate"]
    assert (rate.difference, rate.p_value, rate.test, rate.seeds_needed) == (0.0, 1.0, "Fisher exact", None)
    assert data["comparisons"]["clip_global_norm_1"]["divergence_rate"]["seeds_needed"] is None
    # The analyses and provenance read back into the report's own records, equal to the analysis in memory.
    analysis = analyse(collect(str(root / "results" / "quickstart"))["quickstart"])
    assert summary.boundaries == analysis.boundaries and summary.tuned == analysis.tuned
    assert summary.threshold_curves == analysis.curves and summary.provenance == analysis.provenance
    # One learning rate per variant: a boundary without a curve (nulls in the file, None here).
    assert [(b.label, b.cells, b.critical_lr, b.low, b.high, b.note) for b in summary.boundaries] == [
        ("no_clip", (Cell(0.1, 2, 0),), None, None, None, "one learning rate: no curve"),
        ("clip_global_norm_1", (Cell(0.1, 2, 0),), None, None, None, "one learning rate: no curve"),
    ]
    assert {t.label: t.test_accuracies for t in summary.tuned} == {k: tuple(v) for k, v in tests.items()}
    [curve] = summary.threshold_curves
    assert (curve.transform, curve.variants) == ("clip_by_global_norm", ("clip_global_norm_1",))
    assert (curve.points[0].threshold, curve.points[0].test_accuracies) == (1.0, tuple(clipped))
    assert curve.points[0].clip_share == summary.variants["clip_global_norm_1"].clip_share.mean
    starts = seed_values(root, "no_clip", lambda meta, _: meta["started"]) + seed_values(
        root, "clip_global_norm_1", lambda meta, _: meta["started"]
    )
    assert summary.provenance.first_started == min(starts) and sum(s.runs for s in summary.provenance.sources) == 4


def test_null_reads_as_nan_or_none_and_new_fields_stay_in_raw(report, tmp_path):
    root, _ = report
    data = json.loads((root / "report" / "summary.json").read_text())
    data["comparisons"]["clip_global_norm_1"]["test_accuracy"].update(low=None, p_value=None)
    data["variants"]["no_clip"]["grad_norm_max"] = None
    data["provenance"]["added_later"] = "x"
    data["variants"]["no_clip"]["new_analysis"] = [1, 2]
    (tmp_path / "summary.json").write_text(json.dumps(data, allow_nan=False))
    summary = ks.read_summary(tmp_path)
    accuracy = summary.comparisons["clip_global_norm_1"]["test_accuracy"]
    assert math.isnan(accuracy.low) and math.isnan(accuracy.p_value) and not accuracy.significant
    assert math.isnan(summary.variants["no_clip"].grad_norm_max)
    assert summary.raw["provenance"]["added_later"] == "x" and summary.variants["no_clip"].raw["new_analysis"] == [1, 2]
    # A field the record needs is a KeyError, not a silent default.
    del data["variants"]["no_clip"]["trained"]
    with pytest.raises(KeyError, match="trained"):
        from_json(ks.results.VariantSummary, data["variants"]["no_clip"])
    # Optional fields keep None; plain floats read null as NaN; tuples and dicts item by item.
    comparison = from_json(Comparison, {"difference": None, "low": 1, "high": 2, "p_value": 0.5, "test": "t"})
    assert math.isnan(comparison.difference) and (comparison.low, comparison.high) == (1.0, 2.0)
    # Absent fields take the record's defaults: alpha = 1 − 0.95 (in float, 0.050000000000000044).
    assert (comparison.alpha, comparison.seeds_needed, comparison.measure) == (1 - 0.95, None, "difference")
    assert from_json(dict[str, tuple[float | None, ...]], {"a": [1, None]}) == {"a": (1.0, None)}


def test_read_ledger_types_what_the_report_writes(report):
    root, verdicts = report
    data = json.loads((root / "report" / "claims.json").read_text(), parse_constant=pytest.fail)
    ledger = ks.read_ledger(root / "report")
    assert ledger == ks.read_ledger(root / "report" / "claims.json")
    claims = load_claims(str(root / "claims" / "claims.yaml"))
    assert [entry.claim for entry in ledger] == claims and [entry.raw for entry in ledger] == data
    by_id = {entry.claim.id: entry for entry in ledger}
    assert list(by_id) == ["accuracy", "divergence", "boundary", "threshold", "elsewhere", "late"]
    for entry, verdict in zip(ledger, verdicts):
        assert (entry.verdict, entry.reason, entry.exploratory, entry.exploratory_reason) == (
            verdict["verdict"],
            verdict["reason"],
            verdict["exploratory"],
            verdict["exploratory_reason"],
        )
    # Registration: the commit that added the claims file, at its commit time; `late` is not committed.
    commit, time = git(root / "claims", "log", "--format=%H %ct").split()
    registration = Registration(commit, float(time))
    assert [entry.registered for entry in ledger] == [registration] * 5 + [None]
    assert by_id["divergence"].exploratory_reason == "marked exploratory in the claims file"
    assert by_id["late"].exploratory_reason == "not committed to the claims file's history"
    # The three point claims were tested: their comparisons from the seeds' values, Benjamini–Hochberg over them.
    variants = ("no_clip", "clip_global_norm_1")
    tests = {name: seed_values(root, name, lambda meta, _: meta["test"]["accuracy"]) for name in variants}
    accuracy, divergence = by_id["accuracy"].comparison, by_id["divergence"].comparison
    reference = compare_means(tests["clip_global_norm_1"], tests["no_clip"])
    assert Comparison(**{name: getattr(accuracy, name) for name in Comparison.__dataclass_fields__}) == reference
    assert (accuracy.baseline, divergence.baseline) == ("no_clip", "no_clip")
    assert (divergence.difference, divergence.p_value, divergence.seeds_needed) == (0.0, 1.0, None)
    late = by_id["late"].comparison
    losses = {name: seed_values(root, name, lambda _, rows: float(rows[-1]["val_loss"])) for name in variants}
    assert late.p_value == compare_means(losses["clip_global_norm_1"], losses["no_clip"]).p_value
    # BH over m = 3 tested p-values p(1) ≤ p(2) ≤ p(3): adjusted p(i) = min over j ≥ i of p(j)·m/j.
    tested = [accuracy, divergence, late]
    ordered = sorted(entry.p_value for entry in tested)
    adjusted = [min(ordered[j] * 3 / (j + 1) for j in range(i, 3)) for i in range(3)]
    assert sorted(entry.p_adjusted for entry in tested) == pytest.approx(adjusted, rel=1e-12)
    # Nothing to compare: no comparison, and the reason why.
    for name in ("boundary", "threshold", "elsewhere"):
        assert by_id[name].comparison is None and by_id[name].verdict == "inconclusive"
    assert by_id["elsewhere"].reason == "no results for experiment 'nowhere'"
    assert by_id["threshold"].reason == "no threshold analysis holds variant 'no_clip'"
    assert by_id["boundary"].reason == (
        "no critical learning rate (clip_global_norm_1: one learning rate: no curve; "
        "no_clip: one learning rate: no curve)"
    )
    # claims.md's tally, from the typed records.
    tally = {v: sum(1 for entry in ledger if entry.verdict == v) for v in ("confirmed", "refuted", "inconclusive")}
    exploratory = sum(entry.exploratory for entry in ledger)
    line = ", ".join(f"{n} {v}" for v, n in tally.items()) + f"; {exploratory} exploratory."
    assert line in (root / "report" / "claims.md").read_text()
