"""The report: statistics on synthetic results with known numbers, outputs, and the page in Chromium
(the claims ledger's judging is in test_claims.py)."""

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
from test_claims import claim

from keras_stability.experiments.runner import METRIC_COLUMNS, STEP_COLUMNS
from keras_stability.report import build_reports, summarize
from keras_stability.report.analyses import strict
from keras_stability.report.boundary import Cell
from keras_stability.report.collect import collect
from keras_stability.report.summary import METRICS
from keras_stability.runs.storage import atomic_write_csv, atomic_write_json, atomic_write_text

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
    assert baseline["grad_norm_sampled_every"] == 1
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
    verdicts = build_reports(
        os.path.join(results, "synthetic"), str(tmp_path / "out"), write_claims(tmp_path), log=lambda _: None
    ).verdicts
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "claims.html",
        "claims.json",
        "claims.md",
        "curves.png",
        "forest.png",
        "gradient_norms.png",
        "norm_distribution.png",
        "published.json",
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
    assert [p.name for p in written] == ["claims.json", "published.json", "summary.json"]
    for path in written:
        json.loads(path.read_text(), parse_constant=refuse)
    assert strict({"a": math.nan, "b": (math.inf, np.float64(-math.inf), np.float32(0.5)), 1: Cell(0.1, 2, 1)}) == {
        "a": None,
        "b": [None, None, 0.5],
        "1": {"learning_rate": 0.1, "runs": 2, "diverged": 1, "trained": None},
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
