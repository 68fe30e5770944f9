"""The claims ledger: verdicts at a point, tuned, at matched clip rates and at a stability boundary,
the claims file's validation, and registration from git history (synthetic runs with known numbers)."""

import os
import subprocess

import numpy as np
import pytest
import yaml

from keras_stability.config.loading import ConfigError
from keras_stability.report import analyse, judge, judge_all, load_claims
from keras_stability.report.claims import Claim
from keras_stability.report.collect import ExperimentResults, RunRecord
from keras_stability.report.provenance import registrations


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
    # 3 seeds a side: an exact permutation test cannot go below 2 / C(6, 3) = 0.1, and says so.
    assert noisy["reason"].endswith(
        " seeds per side for 80% power; this design cannot reach p < 0.05: its smallest possible p is 0.1"
    )
    assert judge(claim(experiment="other"), higher)["reason"] == "no results for experiment 'other'"
    assert judge(claim(variant="zclip"), higher)["reason"] == "no results for variant 'zclip'"
    assert (
        judge(claim(), analyses_with([0.9], [0.95]))["reason"]
        == "too few finished runs to test (need ≥ 2 seeds per side)"
    )
    # Trained (test accuracy ≥ 0.2 on ten classes) is an outcome of its own.
    stuck = analyses_with([0.1] * 5, [0.9] * 5)
    assert judge(claim(metric="trained_rate"), stuck)["comparison"]["difference"] == 1.0


def test_solved_rate_counts_runs_at_or_below_the_claims_test_mse():
    def run(variant, seed, loss, diverged=False):
        return record(variant, seed, 0.0, diverged=diverged, meta={"test": {"accuracy": 0.0, "loss": loss}})

    # Clipped: 5 of 5 at or below 0.01; no_clip: a diverged run (non-finite loss) and four above it.
    runs = [run("clipped", s, loss) for s, loss in enumerate([0.001, 0.004, 0.01, 0.002, 0.003])]
    runs += [run("no_clip", 0, float("nan"), diverged=True)]
    runs += [run("no_clip", s, loss) for s, loss in enumerate([0.011, 0.16, 0.17, 0.15], start=1)]
    verdict = judge(claim(metric="solved_rate", solved_mse=0.01), {"synthetic": analysed(runs)})
    # Fisher's exact test, 5/5 against 0/5: two-sided p = 2 / C(10, 5) = 2/252.
    assert verdict["verdict"] == "confirmed" and verdict["comparison"]["difference"] == 1.0
    assert verdict["comparison"]["p_value"] == pytest.approx(2 / 252)
    stricter = judge(claim(metric="solved_rate", solved_mse=0.0035), {"synthetic": analysed(runs)})
    assert stricter["comparison"]["difference"] == pytest.approx(3 / 5)


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
    assert strong["verdict"] == "confirmed" and strong["reason"].endswith(" over 3 confirmatory claims")
    assert strong["comparison"]["p_adjusted"] == pytest.approx(6 / 252)
    assert adjusted["comparison"]["p_adjusted"] == pytest.approx(18 / 252)
    assert adjusted["verdict"] == "inconclusive" and "alone, but not over 3 confirmatory claims" in adjusted["reason"]
    assert null["comparison"]["p_adjusted"] == pytest.approx(null["comparison"]["p_value"])
    assert untested["reason"] == "no results for experiment 'other'"


def test_tuned_comparison_picks_each_variant_best_learning_rate():
    runs = [
        record("no_clip", s, a, learning_rate=lr)
        for lr, accuracies in {0.01: [0.80, 0.82, 0.81, 0.83], 0.1: [0.90, 0.91, 0.92, 0.93], 0.5: [0.1] * 4}.items()
        for s, a in enumerate(accuracies)
    ]
    runs += [record("clipped", s, a, max_norm=1.0, learning_rate=0.5) for s, a in enumerate([0.93, 0.94, 0.95, 0.96])]
    analyses = {"synthetic": analysed(runs)}
    tuned = analyses["synthetic"].tuned
    assert [t.best_lr for t in tuned] == [0.1, 0.5]
    # Seeds 0 and 1 choose the learning rate; seeds 2 and 3, which did not, report its test accuracy.
    assert [(t.selection_seeds, t.test_seeds) for t in tuned] == [((0, 1), (2, 3))] * 2
    assert tuned[0].test_accuracies == (0.92, 0.93) and tuned[1].test_accuracies == (0.95, 0.96)
    # At one point (lr 0.5) clipping wins by 0.84; against the tuned baseline by 0.03 (2 v 2: p = 1/3).
    verdict = judge(claim(analysis="tuned", metric=None), analyses)
    assert verdict["comparison"]["difference"] == pytest.approx(0.955 - 0.925)
    assert verdict["comparison"]["p_value"] == pytest.approx(1 / 3) and verdict["verdict"] == "inconclusive"
    assert "(best lr 0.5 vs 0.1)" in verdict["reason"] and "cannot reach p < 0.05" in verdict["reason"]


def test_a_stability_claim_whose_arm_does_not_train_is_not_confirmed():
    # Clipping never diverges but sits at chance (0.1 on ten classes, below chance + 0.1).
    runs = [record("no_clip", s, 0.9, diverged=s < 5, learning_rate=0.5) for s in range(10)]
    runs += [record("clipped", s, 0.1, max_norm=1.0, learning_rate=0.5) for s in range(10)]
    verdict = judge_all([claim(metric="divergence_rate", expect="lower")], {"synthetic": analysed(runs)})[0]
    assert verdict["trains"] is False and verdict["verdict"] == "stable but does not train"
    assert verdict["reason"].endswith("; but the arm does not train")
    trained = [record("clipped", s, 0.9, max_norm=1.0, learning_rate=0.5) for s in range(10)]
    runs = runs[:10] + trained
    verdict = judge_all([claim(metric="divergence_rate", expect="lower")], {"synthetic": analysed(runs)})[0]
    assert verdict["trains"] is True and verdict["verdict"] == "confirmed"


def test_two_confirmatory_claims_on_one_comparison_are_refused():
    runs = [record("no_clip", s, 0.9, meta={"training_id": f"n{s}"}) for s in range(4)]
    runs += [record("clipped", s, 0.95, max_norm=1.0, meta={"training_id": f"c{s}"}) for s in range(4)]
    analyses = {"synthetic": analysed(runs)}
    with pytest.raises(ValueError, match="Claims 'a' and 'b' test the same comparison"):
        judge_all([claim(id="a"), claim(id="b")], analyses)
    # Another measure of the same runs, or the same one kept exploratory, is allowed.
    judge_all([claim(id="a"), claim(id="b", metric="trained_rate"), claim(id="c", exploratory=True)], analyses)


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
        (dict(metric="solved_rate"), "`solved_mse` (> 0: the test MSE at or below which a run solved the task)"),
        (dict(solved_mse=0.01), "Received: metric='final_val_accuracy', solved_mse=0.01"),
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


def test_every_transform_has_its_threshold_setting():
    from keras_stability.config.transform_specs import TRANSFORM_SPECS
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


def test_a_boundary_claim_whose_baseline_never_crosses_one_half_is_unanswerable():
    runs = [record("no_clip", s, 0.9, lr, diverged=lr == 0.5 and s < 2) for lr in (0.05, 0.1, 0.5) for s in range(11)]
    runs += [record("clipped", s, 0.9, lr, max_norm=1.0) for lr in (0.05, 0.1, 0.5) for s in range(11)]
    verdict = judge_all([claim(analysis="boundary", metric=None)], {"synthetic": analysed(runs)})[0]
    assert verdict["verdict"] == "unanswerable" and verdict["comparison"] is None
    assert verdict["reason"].startswith(
        "unanswerable by design: the baseline (no_clip): the fit crosses ½ past the grid"
    )


def test_a_boundary_claim_on_a_grid_that_never_diverges_is_judged_by_its_bound():
    verdict, reason = boundary_claim_reason((0.05, 0.1, 0.2, 0.5, 1.0))
    assert verdict == "confirmed" and reason.startswith("higher ≥ ×")
    # 2 × 0.5^11: the clipped side's eleven survivors at lr 1 decide; the baseline's profile p-value
    # for a boundary at or above 1 is far smaller (the bootstrap's share stopped at 1/1001 here).
    assert f"(clipped: no run diverged in 0.05–1) (p = {2 * 0.5**11:.3g})" in reason
    # Survivors only below the baseline's boundary bound nothing: the ratio is ≥ a number under 1.
    verdict, reason = boundary_claim_reason((0.01, 0.02))
    assert verdict == "inconclusive" and reason.startswith("not significant: either way ≥ ×0.")
