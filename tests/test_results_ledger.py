"""Results from Python: the typed summary and ledger against a report built from real runs, their
numbers against the runs' own files."""

import csv
import json
import math
import os
import subprocess

import numpy as np
import pytest
from scipy import stats
from test_results_frame import run_quickstart

from keras_stability.report.analyses import analyse
from keras_stability.report.boundary import Cell
from keras_stability.report.build import build_reports
from keras_stability.report.claims import load_claims
from keras_stability.report.collect import collect
from keras_stability.report.judging import VERDICTS
from keras_stability.report.outcomes import TRAINED_RULE
from keras_stability.report.provenance import Registration
from keras_stability.report.statistics import Comparison, compare_means
from keras_stability.results import VariantSummary, from_json, read_ledger, read_summary

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
def report(tmp_path_factory):
    """A report built by the current code from seeds 0 and 1 of the quickstart, with a claims file
    committed to git (and one claim added after the commit)."""
    root = tmp_path_factory.mktemp("report")
    run_quickstart(root / "results", [0, 1])
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
    summary = read_summary(directory)
    assert summary == read_summary(directory / "summary.json") and summary.raw == data
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
        ("no_clip", (Cell(0.1, 2, 0, 2),), None, None, None, "one learning rate: no curve"),
        ("clip_global_norm_1", (Cell(0.1, 2, 0, 2),), None, None, None, "one learning rate: no curve"),
    ]
    # Seed 0 chose the learning rate; seed 1, which did not, reports it.
    assert {t.label: t.test_accuracies for t in summary.tuned} == {k: tuple(v[1:]) for k, v in tests.items()}
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
    summary = read_summary(tmp_path)
    accuracy = summary.comparisons["clip_global_norm_1"]["test_accuracy"]
    assert math.isnan(accuracy.low) and math.isnan(accuracy.p_value) and not accuracy.significant
    assert math.isnan(summary.variants["no_clip"].grad_norm_max)
    assert summary.raw["provenance"]["added_later"] == "x" and summary.variants["no_clip"].raw["new_analysis"] == [1, 2]
    # A field the record needs is a KeyError, not a silent default.
    del data["variants"]["no_clip"]["trained"]
    with pytest.raises(KeyError, match="trained"):
        from_json(VariantSummary, data["variants"]["no_clip"])
    # Optional fields keep None; plain floats read null as NaN; tuples and dicts item by item.
    comparison = from_json(Comparison, {"difference": None, "low": 1, "high": 2, "p_value": 0.5, "test": "t"})
    assert math.isnan(comparison.difference) and (comparison.low, comparison.high) == (1.0, 2.0)
    # Absent fields take the record's defaults: alpha = 1 − 0.95 (in float, 0.050000000000000044).
    assert (comparison.alpha, comparison.seeds_needed, comparison.measure) == (1 - 0.95, None, "difference")
    assert from_json(dict[str, tuple[float | None, ...]], {"a": [1, None]}) == {"a": (1.0, None)}


def test_read_ledger_types_what_the_report_writes(report):
    root, verdicts = report
    data = json.loads((root / "report" / "claims.json").read_text(), parse_constant=pytest.fail)
    ledger = read_ledger(root / "report")
    assert ledger == read_ledger(root / "report" / "claims.json")
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
    # Benjamini–Hochberg runs over the confirmatory family only. Here every claim is exploratory (the
    # file was committed after the runs, `divergence` is marked so, `late` is not committed), so each
    # tested claim is judged alone, with no adjusted p-value.
    assert all(by_id[name].exploratory for name in ("accuracy", "divergence", "late"))
    assert all(math.isnan(entry.p_adjusted) for entry in (accuracy, divergence, late))
    assert all(by_id[name].reason.endswith("(judged alone, outside the family)") for name in ("accuracy", "late"))
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
    tally = {v: sum(1 for entry in ledger if entry.verdict == v) for v in VERDICTS}
    exploratory = sum(entry.exploratory for entry in ledger)
    line = ", ".join(f"{n} {v}" for v, n in tally.items()) + f"; {exploratory} exploratory."
    assert line in (root / "report" / "claims.md").read_text()
