"""Sharpness telemetry in a run (`training.sharpness`): what sharpness.csv records, and nothing else changes."""

import gzip
import json

import numpy as np
import pydantic
import pytest
from conftest import SMALL_RUN

from keras_stability.config.loading import load_experiment
from keras_stability.config.schema import SharpnessConfig, TrainingConfig
from keras_stability.experiments import curvature
from keras_stability.experiments.run_cache import model_for_run, splits_for_run
from keras_stability.experiments.runner import configure_determinism, run_one
from keras_stability.report.build import build_reports
from keras_stability.report.collect import read_run
from keras_stability.report.summary import METRICS, SHARPNESS_METRICS, summarize_variant
from keras_stability.runs import sharpness_log, storage
from keras_stability.runs.key import RunKey
from keras_stability.sharpness import top_hessian_eigenvalue

MEASURED = "training: {epochs: 2, batch_size: 50, sharpness: {examples: 100, iterations: 100}}"


def trained(tmp_path, name, measured):
    text = f"name: {name}\nseeds: [0]\n{SMALL_RUN}variants:\n  plain: {{}}\n"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace("training: {epochs: 2, batch_size: 50}", MEASURED) if measured else text)
    ((variant, seed, config),) = load_experiment(str(path)).runs()
    assert run_one(str(tmp_path / name), config, variant, seed, log=lambda _: None) == "done"  # a root each
    return config, RunKey(name, variant, seed).directory(str(tmp_path / name))


def test_sharpness_is_recorded_before_training_and_after_each_epoch_and_changes_nothing(tmp_path):
    config, directory = trained(tmp_path, "measured", True)
    _, plain = trained(tmp_path, "plain", False)
    for name in ("metrics.csv", "steps.csv.gz"):
        with open(f"{directory}/{name}", "rb") as a, open(f"{plain}/{name}", "rb") as b:
            assert a.read() == b.read(), name  # a measurement reads the weights and changes nothing
    with open(f"{directory}/meta.json") as stream:
        steps_per_epoch = json.load(stream)["steps_per_epoch"]
    rows = np.array(storage.read_csv_rows(f"{directory}/{sharpness_log.SHARPNESS_FILE}"), dtype=float)
    np.testing.assert_array_equal(rows[:, :2], [[0, 0], [1, steps_per_epoch], [2, 2 * steps_per_epoch]])
    np.testing.assert_allclose(rows[:, 3], 2 / 0.1, rtol=1e-6)  # plain SGD: 2/η
    assert np.all(rows[:, 2] > 0)
    # Before training: the model the run starts from, measured by the library function directly.
    configure_determinism(0)
    data = splits_for_run(config.dataset, 0)
    model = model_for_run(config, steps_per_epoch, data.splits.task, 0)
    expected = top_hessian_eigenvalue(model, data.x_train[:100], data.y_train[:100], iterations=100)
    np.testing.assert_allclose(rows[0, 2], float(expected), rtol=1e-6)
    with gzip.open(f"{directory}/steps.csv.gz") as stream:
        assert stream.read().startswith(b"epoch,step,")


def test_a_resumed_run_keeps_only_the_rows_of_the_epochs_it_keeps(tmp_path):
    for epoch in range(4):
        sharpness_log.record(str(tmp_path), epoch, 10 * epoch, (float(epoch), 20.0))
    with open(tmp_path / sharpness_log.SHARPNESS_FILE, "a") as stream:
        stream.write("4,40,1.")  # a row cut short by a crash
    assert sharpness_log.read_sharpness(str(tmp_path))["epoch"].tolist() == [0, 1, 2, 3]  # whole rows only
    with open(tmp_path / sharpness_log.SHARPNESS_FILE, "a") as stream:
        stream.write("\n1")  # and another: "1" cut from "12,..."
    sharpness_log.keep_epochs(str(tmp_path), 1)
    assert storage.read_csv_rows(str(tmp_path / sharpness_log.SHARPNESS_FILE)) == [
        ["0", "0", "0.0", "20.0"],
        ["1", "10", "1.0", "20.0"],
    ]


def test_measurements_are_due_before_training_and_every_k_epochs():
    assert not curvature.due(None, 0)
    settings = SharpnessConfig(every_epochs=3)
    assert [epoch for epoch in range(10) if curvature.due(settings, epoch)] == [0, 3, 6, 9]


def test_the_report_reads_sharpness_against_the_limit_and_only_where_runs_measured_it(tmp_path):
    _, directory = trained(tmp_path, "measured", True)
    _, plain = trained(tmp_path, "plain", False)
    run, unmeasured = read_run(directory), read_run(plain)
    rows = np.array(storage.read_csv_rows(f"{directory}/{sharpness_log.SHARPNESS_FILE}"), dtype=float)
    names = ("initial_sharpness_ratio", "peak_sharpness_ratio", "final_sharpness_ratio")
    initial, peak, final = (SHARPNESS_METRICS[name][0] for name in names)
    assert initial(run) == rows[0, 2] / rows[0, 3]
    assert peak(run) == max(rows[:, 2] / rows[:, 3])
    assert final(run) == rows[-1, 2] / rows[-1, 3]
    assert "peak_sharpness_ratio" in summarize_variant("plain", [run])["metrics"]
    assert set(summarize_variant("plain", [unmeasured])["metrics"]) == set(METRICS)  # other tables unchanged
    build_reports(str(tmp_path / "measured"), str(tmp_path / "report"), log=lambda _: None)
    page = (tmp_path / "report" / "report.md").read_text()
    assert "## Sharpness" in page and f"{peak(run):.3g}" in page


def test_sharpness_is_refused_under_a_distribution_strategy():
    with pytest.raises(pydantic.ValidationError, match="sharpness is measured on one device only"):
        TrainingConfig(distribute="mirrored", sharpness={})
