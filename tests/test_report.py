"""The report: statistics on synthetic results with known numbers, verdicts, outputs, and the page in Chromium."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy import stats

from keras_stability.experiments.loading import ConfigError
from keras_stability.experiments.runner import METRIC_COLUMNS, STEP_COLUMNS
from keras_stability.experiments.storage import atomic_write_csv, atomic_write_json, atomic_write_text
from keras_stability.report import analyse, build_reports, judge, judge_all, load_claims, summarize
from keras_stability.report.analyses import strict
from keras_stability.report.boundary import Cell
from keras_stability.report.claims import Claim
from keras_stability.report.collect import ExperimentResults, RunRecord, collect
from keras_stability.report.provenance import registrations
from keras_stability.report.summary import METRICS

# Test accuracies per variant and seed; "clipped" seed 3 diverged (its test accuracy is NaN).
ACCURACY = {"no_clip": [0.90, 0.92, 0.91, 0.93], "clipped": [0.95, 0.96, 0.94, math.nan]}
STATUS = {"no_clip": ["done", "diverged", "done", "running"], "clipped": ["done", "done", "done", "diverged"]}


def fake_run(root, variant, seed, status, accuracy):
    directory = os.path.join(root, "synthetic", variant, f"seed-{seed}")
    config = {"name": "synthetic", "baseline": "no_clip", "description": "made-up numbers"}
    atomic_write_text(
        os.path.join(directory, "config.yaml"),
        yaml.safe_dump({"experiment": "synthetic", "variant": variant, "seed": seed, "config": config}),
    )
    val = [0.5, 0.8, accuracy]
    rows = [
        [epoch, 1.0 / epoch, a, 1.0 / epoch, a, 2.0 * epoch, 1.0, 0.5, 0.0, 0.1] for epoch, a in zip([1, 2, 3], val)
    ]
    atomic_write_csv(os.path.join(directory, "metrics.csv"), METRIC_COLUMNS, rows)
    norms = [1.0, 10.0, 100.0] if variant == "no_clip" else [1.0, 2.0, 4.0]
    atomic_write_csv(
        os.path.join(directory, "steps.csv"),
        STEP_COLUMNS,
        [[1, i + 1, 1.0, n, min(n, 1.0)] for i, n in enumerate(norms)],
    )
    meta = {
        "status": status,
        "test": {"accuracy": accuracy, "loss": 1 - accuracy if math.isfinite(accuracy) else math.nan},
        "timings": {"seconds_per_epoch": 2.0},
    }
    if status == "diverged":
        meta["diverged_at_step"] = 7
    atomic_write_json(os.path.join(directory, "meta.json"), meta)


@pytest.fixture
def results(tmp_path):
    for variant in ACCURACY:
        for seed, (status, accuracy) in enumerate(zip(STATUS[variant], ACCURACY[variant])):
            fake_run(str(tmp_path / "results"), variant, seed, status, accuracy)
    return str(tmp_path / "results")


def test_summary_counts_failures_and_leaves_out_unfinished(results):
    experiment = collect(results)["synthetic"]
    assert experiment.baseline == "no_clip" and list(experiment.variants) == ["no_clip", "clipped"]
    summary = summarize(experiment)
    baseline, clipped = summary["variants"]["no_clip"], summary["variants"]["clipped"]
    assert (baseline["runs"], baseline["finished"], baseline["diverged"]) == (4, 3, 1)
    assert baseline["unfinished"] == [{"seed": 3, "status": "running"}]  # never averaged in
    assert baseline["metrics"]["test_accuracy"]["values"] == [0.90, 0.92, 0.91]
    # The diverged clipped run failed: it scores 0 on accuracy, and is left out of the loss mean.
    assert clipped["metrics"]["test_accuracy"]["values"] == [0.95, 0.96, 0.94, 0.0]
    assert clipped["metrics"]["test_loss"]["excluded"] == 1 and clipped["metrics"]["test_loss"]["n"] == 3
    assert clipped["metrics"]["test_accuracy"]["mean"] == pytest.approx(2.85 / 4)
    assert baseline["grad_norm_max"] == 100.0 and baseline["grad_norm_median"] == 10.0
    assert clipped["diverged_at_steps"] == [7]
    comparison = summary["comparisons"]["clipped"]["test_accuracy"]
    expected = stats.permutation_test(
        ([0.95, 0.96, 0.94, 0.0], [0.90, 0.92, 0.91]),
        lambda a, b: np.mean(a) - np.mean(b),
        permutation_type="independent",
        n_resamples=np.inf,
    )
    assert comparison["p_value"] == pytest.approx(expected.pvalue, rel=1e-12) and comparison["test"] == "permutation"
    # Trained: not diverged and test accuracy ≥ 0.1 + 0.1 (the synthetic runs' dataset has no name: no chance level).
    assert baseline["trained"] is None and "trained_rate" not in summary["comparisons"]["clipped"]
    divergence = summary["comparisons"]["clipped"]["divergence_rate"]
    assert divergence["difference"] == pytest.approx(1 / 4 - 1 / 3)
    assert divergence["p_value"] == pytest.approx(stats.fisher_exact([[1, 3], [1, 2]]).pvalue, rel=1e-12)


def test_convergence_overfitting_and_explosion_metrics(results):
    summary = summarize(collect(results)["synthetic"])
    baseline, clipped = summary["variants"]["no_clip"]["metrics"], summary["variants"]["clipped"]["metrics"]
    assert baseline["first_val_accuracy"]["values"] == [0.5, 0.5, 0.5]
    # Train and val accuracy are equal in these runs; a diverged run has no gap to speak of.
    assert baseline["generalization_gap"]["values"] == [0.0, 0.0] and baseline["generalization_gap"]["excluded"] == 1
    assert baseline["log10_max_grad_norm"]["values"] == pytest.approx([2.0, 2.0, 2.0])
    assert clipped["log10_max_grad_norm"]["values"] == pytest.approx([math.log10(4.0)] * 4)
    explosion = summary["comparisons"]["clipped"]["log10_max_grad_norm"]
    assert explosion["difference"] == pytest.approx(math.log10(4.0) - 2.0)


def claim(**overrides):
    fields = dict(
        id="c",
        text="t",
        source="s",
        experiment="synthetic",
        metric="final_val_accuracy",
        variant="clipped",
        expect="higher",
    )
    return Claim(**{**fields, **overrides})


def record(variant, seed, accuracy, learning_rate=0.1, diverged=False, max_norm=None, clip_rate=0.0, meta=None):
    """A finished run of a digit classifier: one epoch at `accuracy` (validation and test)."""
    stabilizer = None if max_norm is None else {"transforms": [{"name": "clip_by_global_norm", "max_norm": max_norm}]}
    config = {
        "dataset": {"name": "mnist_small"},
        "model": {"name": "mlp"},
        "training": {"epochs": 1},
        "optimizer": {"name": "sgd", "learning_rate": learning_rate},
        "stabilizer": stabilizer,
    }
    metrics = {"val_accuracy": np.array([accuracy]), "val_loss": np.array([1.0]), "clip_rate": np.array([clip_rate])}
    meta = {"test": {"accuracy": accuracy, "loss": 1.0}, **(meta or {})}
    return RunRecord("synthetic", variant, seed, "diverged" if diverged else "done", meta, config, metrics, {})


def analysed(runs, baseline="no_clip"):
    variants = {}
    for run in runs:
        variants.setdefault(run.variant, []).append(run)
    return analyse(ExperimentResults("synthetic", baseline, variants))


def analyses_with(no_clip, clipped):
    """{"synthetic": analysis} whose final validation accuracies are the given lists (all runs done)."""
    runs = [record("no_clip", s, a) for s, a in enumerate(no_clip)] + [
        record("clipped", s, a, max_norm=1.0) for s, a in enumerate(clipped)
    ]
    return {"synthetic": analysed(runs)}


def test_verdicts():
    higher = analyses_with([0.90, 0.91, 0.90, 0.91], [0.95, 0.96, 0.95, 0.96])
    assert judge(claim(), higher)["verdict"] == "confirmed"  # exact permutation p = 2/70
    refuted = judge(claim(expect="lower"), higher)
    assert refuted["verdict"] == "refuted" and refuted["reason"] == "higher, not lower, by +0.05 (p = 0.0286)"
    noisy = judge(claim(), analyses_with([0.90, 0.95, 0.85], [0.92, 0.88, 0.96]))
    assert noisy["verdict"] == "inconclusive" and noisy["reason"].startswith(
        "not significant: higher by +0.02 (p = 0.7)"
    )
    assert noisy["reason"].endswith(" seeds per side for 80% power")
    assert judge(claim(experiment="other"), higher)["reason"] == "no results for experiment 'other'"
    assert judge(claim(variant="zclip"), higher)["reason"] == "no results for variant 'zclip'"
    assert (
        judge(claim(), analyses_with([0.9], [0.95]))["reason"]
        == "too few finished runs to test (need ≥ 2 seeds per side)"
    )
    # Trained (test accuracy ≥ 0.2 on ten classes) is an outcome of its own.
    stuck = analyses_with([0.1] * 5, [0.9] * 5)
    assert judge(claim(metric="trained_rate"), stuck)["comparison"]["difference"] == 1.0


def test_ledger_adjusts_for_testing_many_claims():
    analyses = analyses_with([0.90, 0.91, 0.92, 0.93, 0.94], [0.95, 0.96, 0.97, 0.98, 0.99])
    analyses["borderline"] = analyses_with([0.90, 0.91, 0.92, 0.93, 0.94], [0.92, 0.945, 0.95, 0.96, 0.97])["synthetic"]
    analyses["null"] = analyses_with([0.90, 0.95, 0.85], [0.92, 0.88, 0.96])["synthetic"]
    borderline = claim(id="b", experiment="borderline")
    alone = judge(borderline, analyses)
    assert alone["verdict"] == "confirmed" and alone["comparison"]["p_value"] == pytest.approx(12 / 252, rel=1e-12)
    ledger = [claim(), borderline, claim(id="n", experiment="null"), claim(experiment="other")]
    strong, adjusted, null, untested = judge_all(ledger, analyses)
    # Exact p-values over C(10, 5) = 252 splits; Benjamini–Hochberg over three tested claims:
    # 2/252 · 3 = 0.024 < 0.05; 12/252 · 3/2 = 0.071 > 0.05.
    assert strong["verdict"] == "confirmed" and strong["reason"].endswith(" over 3 claims")
    assert strong["comparison"]["p_adjusted"] == pytest.approx(6 / 252)
    assert adjusted["comparison"]["p_adjusted"] == pytest.approx(18 / 252)
    assert adjusted["verdict"] == "inconclusive" and "alone, but not over 3 claims" in adjusted["reason"]
    assert null["comparison"]["p_adjusted"] == pytest.approx(null["comparison"]["p_value"])
    assert untested["reason"] == "no results for experiment 'other'"


def test_tuned_comparison_picks_each_variant_best_learning_rate():
    runs = [
        record("no_clip", s, a, learning_rate=lr)
        for lr, accuracies in {0.01: [0.80, 0.82, 0.81], 0.1: [0.90, 0.91, 0.92], 0.5: [0.1, 0.1, 0.1]}.items()
        for s, a in enumerate(accuracies)
    ]
    runs += [record("clipped", s, a, max_norm=1.0, learning_rate=0.5) for s, a in enumerate([0.93, 0.94, 0.95])]
    analyses = {"synthetic": analysed(runs)}
    assert [t.best_lr for t in analyses["synthetic"].tuned] == [0.1, 0.5]
    # At one point (lr 0.5) clipping wins by 0.84; against the tuned baseline by 0.03 (3 v 3: p = 2/20).
    verdict = judge(claim(analysis="tuned", metric=None), analyses)
    assert verdict["comparison"]["difference"] == pytest.approx(0.94 - 0.91)
    assert verdict["comparison"]["p_value"] == pytest.approx(0.1) and verdict["verdict"] == "inconclusive"
    assert "(best lr 0.5 vs 0.1)" in verdict["reason"]


def test_threshold_claims_compare_at_matched_clip_rates():
    runs = [
        record("no_clip", s, a, max_norm=t, clip_rate=r)
        for t, r, accuracies in [(0.1, 0.9, [0.5, 0.52]), (1.0, 0.5, [0.80, 0.82]), (10.0, 0.1, [0.6, 0.62])]
        for s, a in enumerate(accuracies)
    ]
    runs += [record("clipped", s, a) for s, a in enumerate([0.7, 0.72])]
    for transform, limit, rate, accuracies in [
        ("clip_by_value", 0.01, 0.95, [0.4, 0.42]),
        ("clip_by_value", 0.1, 0.45, [0.70, 0.71]),
    ]:
        for s, a in enumerate(accuracies):
            run = record("value", s, a, clip_rate=rate)
            run.config["stabilizer"] = {"transforms": [{"name": transform, "limit": limit}]}
            runs.append(run)
    analysis = analysed(runs)
    (norm,), (value,) = [
        [c for c in analysis.curves if c.transform == t] for t in ("clip_by_global_norm", "clip_by_value")
    ]
    assert [p.threshold for p in norm.points] == [0.1, 1.0, 10.0] and [p.clip_share for p in value.points] == [
        0.95,
        0.45,
    ]
    verdict = judge(
        claim(analysis="threshold", metric=None, clip_rate=0.5, variant="no_clip", baseline="value"),
        {"synthetic": analysis},
    )
    assert verdict["comparison"]["difference"] == pytest.approx(0.81 - 0.705)
    assert "(threshold 1 clipping 50% of steps vs 0.1 clipping 45%)" in verdict["reason"]
    # At 70 % neither curve has a point within 10 points (50 % and 45 % are nearest): nothing judged.
    unmatched = judge(
        claim(analysis="threshold", metric=None, clip_rate=0.7, variant="no_clip", baseline="value"),
        {"synthetic": analysis},
    )
    assert unmatched["verdict"] == "inconclusive" and unmatched["comparison"] is None
    assert unmatched["reason"] == (
        "no matched clip rate: the nearest to 70% are threshold 1 clipping 50% of steps vs 0.1 clipping 45% "
        "(each must be within 10%)"
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(metric=None), "a `point` claim needs `metric:`"),
        (dict(analysis="boundary"), "`metric` applies to `point` claims only"),
        (dict(analysis="threshold", metric=None), "`clip_rate` (0 < clip_rate < 1) is needed by `threshold` claims"),
        (dict(clip_rate=0.5), "Received: analysis='point', clip_rate=0.5"),
        (dict(analysis="sweep"), "unknown name 'sweep'"),
    ],
)
def test_claims_file_validation(tmp_path, fields, message):
    path = tmp_path / "claims.yaml"
    entry = {**claim().model_dump(exclude_defaults=True), **fields}
    path.write_text(yaml.safe_dump({"claims": [{k: v for k, v in entry.items() if v is not None}]}, sort_keys=False))
    with pytest.raises(ConfigError) as error:
        load_claims(str(path))
    assert str(error.value).startswith(f"{path}:") and message in str(error.value)


def git(directory, *arguments, when="2026-01-01T00:00:00+00:00"):
    environment = {
        **os.environ,
        "GIT_AUTHOR_DATE": when,
        "GIT_COMMITTER_DATE": when,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(
        ["git", "-C", str(directory), *arguments], check=True, capture_output=True, text=True, env=environment
    )


def test_registration_from_git_marks_late_claims_exploratory(tmp_path):
    path = tmp_path / "claims.yaml"
    git(tmp_path, "init", "-q")
    first, later = claim(id="early").model_dump(), claim(id="late").model_dump()
    path.write_text(yaml.safe_dump({"claims": [first]}))
    git(tmp_path, "add", "claims.yaml")
    git(tmp_path, "commit", "-qm", "one", when="2026-01-01T00:00:00+00:00")
    path.write_text(yaml.safe_dump({"claims": [first, later]}))
    git(tmp_path, "commit", "-qam", "two", when="2026-01-03T00:00:00+00:00")
    path.write_text(
        yaml.safe_dump(
            {
                "claims": [
                    first,
                    later,
                    claim(id="uncommitted").model_dump(),
                    {**claim(id="hand").model_dump(), "exploratory": True},
                ]
            }
        )
    )
    registered = registrations(str(path))
    assert set(registered) == {"early", "late"} and registered["early"].time == 1767225600.0
    started = 1767225600.0 + 86400  # the experiment's first run started on 2 January
    runs = [
        record("no_clip", s, a, meta={"started": started + s, "git": {"commit": "a" * 40, "dirty": s == 1}})
        for s, a in enumerate([0.90, 0.91])
    ]
    runs += [
        record("clipped", s, a, meta={"started": started, "git": {"commit": "b" * 40, "dirty": False}})
        for s, a in enumerate([0.95, 0.96])
    ]
    analysis = analysed(runs)
    assert (
        analysis.provenance.warning
        == "runs come from 2 commits; 1 of 4 runs ran from a working tree with uncommitted changes"
    )
    verdicts = judge_all(load_claims(str(path)), {"synthetic": analysis}, registered)
    assert [v["exploratory"] for v in verdicts] == [False, True, True, True]
    assert verdicts[1]["exploratory_reason"].startswith(
        f"registered in {registered['late'].commit[:10]} after the experiment's first run"
    )
    assert verdicts[2]["exploratory_reason"] == "not committed to the claims file's history"
    assert verdicts[3]["exploratory_reason"] == "marked exploratory in the claims file"


def write_claims(tmp_path):
    path = tmp_path / "claims.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "claims": [
                    claim(metric="test_accuracy").model_dump(),
                    claim(id="d", metric="divergence_rate", expect="lower").model_dump(),
                ]
            }
        )
    )
    return str(path)


def test_outputs(results, tmp_path):
    _reports, verdicts = build_reports(
        os.path.join(results, "synthetic"), str(tmp_path / "out"), write_claims(tmp_path), log=lambda _: None
    )
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "claims.html",
        "claims.json",
        "claims.md",
        "curves.png",
        "forest.png",
        "gradient_norms.png",
        "norm_distribution.png",
        "report.html",
        "report.md",
        "summary.json",
    ]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and 'src="curves.png"' not in page  # self-contained
    assert "seed 3: running" in page and "1/3 (steps 7)" in page
    markdown = (out / "report.md").read_text()
    assert "| no_clip (baseline) | 3/4 — seed 3: running | 1/3 (steps 7) | " in markdown
    assert "![Learning curves](curves.png)" in markdown
    summary = json.loads((out / "summary.json").read_text())
    assert summary["variants"]["clipped"]["metrics"]["test_accuracy"]["values"] == [0.95, 0.96, 0.94, 0.0]
    assert [v["verdict"] for v in verdicts] == ["inconclusive", "inconclusive"]
    assert "INCONCLUSIVE" in (out / "claims.md").read_text()
    assert '<td class="inconclusive">INCONCLUSIVE</td>' in (out / "claims.html").read_text()


def refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")


def test_every_written_json_is_strict(results, tmp_path):
    # The synthetic runs hold NaN test scores and too few seeds for some tests: all must come out null.
    build_reports(results, str(tmp_path / "out"), write_claims(tmp_path), log=lambda _: None)
    written = sorted((tmp_path / "out").rglob("*.json"))
    assert [p.name for p in written] == ["claims.json", "summary.json"]
    for path in written:
        json.loads(path.read_text(), parse_constant=refuse)
    assert strict({"a": math.nan, "b": (math.inf, np.float64(-math.inf), np.float32(0.5)), 1: Cell(0.1, 2, 1)}) == {
        "a": None,
        "b": [None, None, 0.5],
        "1": {"learning_rate": 0.1, "runs": 2, "diverged": 1},
    }


def test_cli_report_errors(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "keras_stability.cli", "report", str(tmp_path)], capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith(f"keras-stability report: No runs under {tmp_path}")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(results, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    build_reports(os.path.join(results, "synthetic"), str(tmp_path / "out"), None, log=lambda _: None)
    page = (tmp_path / "out" / "report.html").as_uri()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<tr>") == (1 + 2) + (
        1 + len(METRICS) + 1
    )  # variants (header + 2), comparisons (header + metrics + divergence)
    assert dom.count("<img") == 3 and "clipped − no_clip" in dom
    screenshot = tmp_path / "page.png"
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1280,2400", f"--screenshot={screenshot}", page],
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 20  # not blank: text, tables and plots
    assert (pixels < 128).mean() > 0.01


def test_every_transform_has_its_threshold_setting():
    from keras_stability.experiments.schema import TRANSFORM_SPECS
    from keras_stability.report.tradeoff import THRESHOLDS

    assert set(THRESHOLDS) == set(TRANSFORM_SPECS)
    assert all(THRESHOLDS[name] in spec.model_fields for name, spec in TRANSFORM_SPECS.items())


def boundary_claim_reason(clipped_rates):
    """The verdict of "clipping raises the critical LR" with no clipped run diverging at `clipped_rates`
    and the baseline diverging from 0.2 up (11 seeds per learning rate)."""
    runs = [record("no_clip", s, 0.9, lr, diverged=lr >= 0.2) for lr in (0.05, 0.1, 0.2, 0.5) for s in range(11)]
    runs += [record("clipped", s, 0.9, lr, max_norm=1.0) for lr in clipped_rates for s in range(11)]
    verdict = judge(claim(analysis="boundary", metric=None), {"synthetic": analysed(runs)})
    return verdict["verdict"], verdict["reason"]


def test_a_boundary_claim_on_a_grid_that_never_diverges_is_judged_by_its_bound():
    verdict, reason = boundary_claim_reason((0.05, 0.1, 0.2, 0.5, 1.0))
    assert verdict == "confirmed" and reason.startswith("higher ≥ ×")
    assert "(clipped: no run diverged in 0.05–1) (p = 0.002)" in reason
    # Survivors only below the baseline's boundary bound nothing: the ratio is ≥ a number under 1.
    verdict, reason = boundary_claim_reason((0.01, 0.02))
    assert verdict == "inconclusive" and reason.startswith("not significant: either way ≥ ×0.")
