"""Published results beside our measurements: the mean and t-interval over seeds (scipy's), divergences,
and where the published figure falls; the claims file validates the entries."""

import numpy as np
import pytest
import yaml
from scipy import stats

from keras_stability.config.loading import ConfigError
from keras_stability.report import analyse
from keras_stability.report.claims import load_claims_file
from keras_stability.report.collect import ExperimentResults, RunRecord
from keras_stability.report.published import PublishedResult, measure, published_cells


def run(variant, seed, accuracy, diverged=False):
    """A finished classifier run; a diverged one has no finite test score."""
    config = {
        "dataset": {"name": "mnist_small"},
        "model": {"name": "mlp"},
        "training": {"epochs": 1},
        "optimizer": {"name": "sgd", "learning_rate": 0.1},
        "stabilizer": None,
    }
    accuracy = np.nan if diverged else accuracy
    metrics = {"val_accuracy": np.array([accuracy]), "val_loss": np.array([1.0]), "clip_rate": np.array([0.0])}
    test = {"accuracy": accuracy, "loss": np.nan if diverged else 1.0 - accuracy}
    return RunRecord("anchor", variant, seed, "diverged" if diverged else "done", {"test": test}, config, metrics, {})


ACCURACIES = [0.91, 0.93, 0.92, 0.90]


@pytest.fixture(scope="module")
def analyses():
    runs = [run("base", seed, value) for seed, value in enumerate(ACCURACIES)] + [run("base", 4, None, diverged=True)]
    return {"anchor": analyse(ExperimentResults("anchor", "base", {"base": runs}))}


def entry(**overrides):
    fields = dict(id="p", source="a paper", experiment="anchor", variant="base", metric="test_accuracy")
    return PublishedResult(**{**fields, "published": "92.38 %", "value": 0.9238, **overrides})


def test_the_measured_side_is_the_t_interval_over_seeds_with_diverged_runs_at_zero(analyses):
    row = measure(entry(), analyses)
    values = ACCURACIES + [0.0]  # a diverged classifier scores 0, as in every accuracy summary
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row["ci"] == pytest.approx((high - low) / 2)
    assert (row["n"], row["diverged"], row["runs"], row["excluded"]) == (5, 1, 5, 0)
    assert row["published_is"] == "inside"
    cells = published_cells([row])[0]
    assert cells[4] == f"{np.mean(values):.4g} ± {(high - low) / 2:.4g} (n = 5)" and cells[5] == "1/5"


def test_a_loss_leaves_diverged_runs_out_and_places_the_published_value(analyses):
    row = measure(entry(metric="test_loss", value=0.5, published="0.5"), analyses)
    losses = [1.0 - a for a in ACCURACIES]
    assert row["mean"] == pytest.approx(np.mean(losses)) and row["excluded"] == 1
    assert row["published_is"] == "above"
    assert measure(entry(metric="test_loss", value=0.0), analyses)["published_is"] == "below"
    assert "published_is" not in measure(entry(value=None), analyses)
    assert published_cells([row])[0][4].endswith("(n = 4) (1 diverged left out)")


def test_a_missing_variant_or_experiment_is_said(analyses):
    for missing in (entry(variant="clipped"), entry(experiment="other")):
        row = measure(missing, analyses)
        assert row["missing"].startswith("no results for") and row["n"] == 0
        assert published_cells([row])[0][4] == row["missing"]


def test_the_claims_file_validates_published_entries(tmp_path):
    path = tmp_path / "claims.yaml"
    good = entry().model_dump()
    path.write_text(yaml.safe_dump({"claims": [], "published": [good]}))
    assert load_claims_file(str(path)).published == [entry()]
    path.write_text(yaml.safe_dump({"claims": [], "published": [{**good, "metric": "accuracy"}]}))
    with pytest.raises(ConfigError, match="metric"):
        load_claims_file(str(path))
