"""Thinned step logs: the rows a long run keeps (against a row-by-row reference), a thinned log told
from a damaged one, and reports that read the same peaks and samples from a thinned log as from the
full one."""

import gzip
import math
import os

import numpy as np
import pytest
from test_run_store import experiments

from keras_stability import cli
from keras_stability.experiments.suite import run_experiments
from keras_stability.report.collect import collect
from keras_stability.report.summary import log10_max_grad_norm, summarize_variant
from keras_stability.runs import step_thinning


def reference_kept(step, loss, grad_norm, every):
    """Row by row: each block's multiple of `every`, its first largest finite norm and its first
    non-finite row, and the last row."""
    keep = [False] * len(step)
    keep[-1] = True
    for block in sorted({(s - 1) // every for s in step}):
        rows = [i for i, s in enumerate(step) if (s - 1) // every == block]
        finite = [i for i in rows if math.isfinite(grad_norm[i])]
        if finite:
            keep[max(finite, key=lambda i: (grad_norm[i], -i))] = True
        broken = [i for i in rows if not (math.isfinite(loss[i]) and math.isfinite(grad_norm[i]))]
        if broken:
            keep[broken[0]] = True
        for i in rows:
            keep[i] |= step[i] % every == 0
    return np.array(keep)


def random_log(rng, steps):
    # Rounded to one decimal so that blocks hold ties; a few NaN, inf and NaN-loss rows.
    grad_norm = np.round(rng.lognormal(0.0, 1.0, steps), 1)
    loss = rng.uniform(0.0, 3.0, steps)
    broken = max(1, steps // 100)
    grad_norm[rng.choice(steps, broken, replace=False)] = np.nan
    grad_norm[rng.choice(steps, broken, replace=False)] = np.inf
    loss[rng.choice(steps, broken, replace=False)] = np.nan
    return np.arange(1, steps + 1), loss, grad_norm


@pytest.mark.parametrize("steps, every", [(1000, 7), (998, 7), (50, 1), (40, 40), (6, 4)])
def test_kept_rows_match_a_row_by_row_reference(steps, every):
    step, loss, grad_norm = random_log(np.random.default_rng(steps), steps)
    keep = step_thinning.kept(step, loss, grad_norm, every)
    np.testing.assert_array_equal(keep, reference_kept(step, loss, grad_norm, every))
    assert keep.all() if every == 1 else keep.sum() <= 3 * math.ceil(steps / every) + 1
    # A thinned log is its own thinning.
    assert step_thinning.kept(step[keep], loss[keep], grad_norm[keep], every).all()


def test_strides_keep_at_most_max_blocks_samples():
    assert [step_thinning.stride(n) for n in (None, 1, 2000, 2001, 40_500, 46_100)] == [1, 1, 1, 2, 21, 24]
    assert step_thinning.planned_steps({"training": {"epochs": 100}}, 405) == 40_500
    assert step_thinning.planned_steps({"training": {}}, 405) is None
    assert step_thinning.run_stride({"training": {"epochs": 100}}, {"steps_per_epoch": 405}) == 21
    assert step_thinning.run_stride({"training": {"epochs": 100}}, {}) == 1


def test_a_thinned_log_is_told_from_a_damaged_one():
    step, loss, grad_norm = random_log(np.random.default_rng(0), 120)
    keep = step_thinning.kept(step, loss, grad_norm, 7)
    table = {"epoch": (step - 1) // 40 + 1, "step": step, "loss": loss, "grad_norm": grad_norm}
    thinned = {column: values[keep] for column, values in table.items()}
    assert step_thinning.check_thinned(thinned, 7, 120, 40) is None
    without_14 = {column: values[thinned["step"] != 14] for column, values in thinned.items()}
    assert step_thinning.check_thinned(without_14, 7, 120, 40) == "it lacks a step at some multiple of 7"
    one_more = keep.copy()
    one_more[np.flatnonzero(~keep)[0]] = True
    with_extra = {column: values[one_more] for column, values in table.items()}
    assert step_thinning.check_thinned(with_extra, 7, 120, 40) == "it keeps more than blocks of 7 steps keep"
    assert step_thinning.check_thinned(thinned, 7, 160, 40) == "its steps do not rise from 1 to step 160"
    wrong_epochs = {**thinned, "epoch": (thinned["step"] - 1) // 30 + 1}
    assert step_thinning.check_thinned(wrong_epochs, 7, 120, 40) == "its epochs do not hold 40 steps each"


def step_logs(results):
    return {
        str(path.relative_to(results)): gzip.decompress(path.read_bytes())
        for path in sorted(results.glob("*/*/seed-0/steps.csv.gz"))
        if not path.is_symlink()
    }


def test_compacting_thins_long_runs_and_reports_read_the_same_peaks_and_samples(tmp_path, monkeypatch, capsys):
    full = tmp_path / "full"
    assert run_experiments(experiments(tmp_path), str(full), show_progress=False) == {"done": 2, "shared": 1}
    before = collect(str(full))
    full_logs = step_logs(full)
    # Two epochs of 4 steps: blocks of 3 steps once a run of 8 is "long".
    monkeypatch.setattr(step_thinning, "MAX_BLOCKS", 3)
    capsys.readouterr()
    assert cli.main(["compact", str(full)]) == 0
    assert capsys.readouterr().out.startswith("2 runs compacted (2 long ones thinned): ")
    after = collect(str(full))
    for experiment, variant in (("first", "plain"), ("second", "reference"), ("second", "faster")):
        (run,), (thin,) = (c[experiment].variants[variant] for c in (before, after))
        assert thin.status == "done" and thin.damage is None and thin.step_stride == 3
        keep = step_thinning.kept(run.steps["step"], run.steps["loss"], run.steps["grad_norm"], 3)
        for column, values in run.steps.items():
            np.testing.assert_array_equal(thin.steps[column], values[keep])
        assert thin.steps["step"][thin.steps["step"] % 3 == 0].tolist() == [3, 6]
        np.testing.assert_array_equal(thin.sampled_steps("grad_norm"), run.steps["grad_norm"][[2, 5]])
        assert log10_max_grad_norm(thin) == log10_max_grad_norm(run)
        summary = summarize_variant(variant, [thin])
        assert summary["grad_norm_max"] == run.steps["grad_norm"].max()
        assert summary["grad_norm_median"] == np.median(run.steps["grad_norm"][[2, 5]])
        assert summary["grad_norm_sampled_every"] == 3
    thinned_logs = step_logs(full)
    assert all(len(thinned_logs[name]) < len(full_logs[name]) for name in full_logs)
    # Compacting and running again change nothing; a run trained as long from the start writes the
    # same bytes as the full log thinned afterwards.
    assert cli.main(["compact", str(full)]) == 0
    assert capsys.readouterr().out.startswith("0 runs compacted: ")
    assert run_experiments(experiments(tmp_path), str(full), show_progress=False) == {"skipped": 2, "shared": 1}
    assert step_logs(full) == thinned_logs
    fresh = tmp_path / "fresh"
    assert run_experiments(experiments(tmp_path), str(fresh), show_progress=False) == {"done": 2, "shared": 1}
    assert step_logs(fresh) == thinned_logs
    assert os.readlink(fresh / "second" / "reference" / "seed-0" / "steps.csv.gz").endswith("steps.csv.gz")


def test_a_damaged_thinned_log_is_listed_as_damage(tmp_path, monkeypatch):
    monkeypatch.setattr(step_thinning, "MAX_BLOCKS", 3)
    results = tmp_path / "results"
    run_experiments(experiments(tmp_path)[:1], str(results), show_progress=False)
    path = results / "first" / "plain" / "seed-0" / "steps.csv.gz"
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    sample = next(line for line in lines[1:] if line.split(b",")[1] == b"6")
    path.write_bytes(gzip.compress(b"".join(line for line in lines if line != sample)))
    (run,) = collect(str(results))["first"].variants["plain"]
    assert run.status == "damaged"
    assert run.damage.problem == (
        "its steps are neither 1, 2, … nor a long run's thinned log: it lacks a step at some multiple of 3"
    )
