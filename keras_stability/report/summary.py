"""Per-variant summaries and comparisons with the baseline, as plain data (→ summary.json)."""

import math
from dataclasses import asdict

import numpy as np

from keras_stability.report.outcomes import TRAINED_RULE, outcome_of
from keras_stability.report.statistics import compare_means, compare_rates, mean_ci


def last_value(values):
    return float(values[-1]) if len(values) else math.nan


def best(values):
    finite = values[np.isfinite(values)] if len(values) else values
    return float(finite.max()) if len(finite) else math.nan


def test_score(key):
    return lambda run: float(run.meta.get("test", {}).get(key, math.nan))


def first_value(values):
    return float(values[0]) if len(values) else math.nan


def generalization_gap(run):
    """Final train accuracy minus final val accuracy; undefined (NaN) for a diverged run."""
    if run.diverged:
        return math.nan
    return last_value(run.epoch_values("train_accuracy")) - last_value(run.epoch_values("val_accuracy"))


def log10_max_grad_norm(run):
    """How far the gradient norm exploded: log10 of the largest finite pre-transform norm of any step."""
    norms = run.steps.get("grad_norm", np.array([]))
    norms = norms[np.isfinite(norms) & (norms > 0)]
    return float(np.log10(norms.max())) if len(norms) else math.nan


def sharpness_ratios(run, initial=False):
    """The run's sharpness over its optimizer's stability limit at each measurement (`training.sharpness`;
    the one before training with `initial`), finite ones only: none after divergence."""
    table = run.sharpness
    if not table:
        return np.array([])
    rows = table["epoch"] == 0 if initial else np.ones(len(table["epoch"]), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = table["sharpness"][rows] / table["limit"][rows]
    return ratios[np.isfinite(ratios)]


def largest(values):
    return float(values.max()) if len(values) else math.nan


# name → (how to read it from a run, kind). A diverged run scores 0 on accuracy-kind metrics whose
# value is not finite (it failed; it is not missing); loss-kind metrics cannot average a NaN, so such
# runs are left out of the mean and counted in `excluded`.
METRICS = {
    "final_val_accuracy": (lambda run: last_value(run.epoch_values("val_accuracy")), "accuracy"),
    "best_val_accuracy": (lambda run: best(run.epoch_values("val_accuracy")), "accuracy"),
    "test_accuracy": (test_score("accuracy"), "accuracy"),
    "final_val_loss": (lambda run: last_value(run.epoch_values("val_loss")), "loss"),
    "test_loss": (test_score("loss"), "loss"),
    "first_val_accuracy": (lambda run: first_value(run.epoch_values("val_accuracy")), "accuracy"),
    "generalization_gap": (generalization_gap, "loss"),
    "log10_max_grad_norm": (log10_max_grad_norm, "loss"),
}
# Measured by runs with `training.sharpness` only: a variant's summary, and a comparison, has them
# when its runs (and the baseline's) do, so experiments without them keep their tables.
SHARPNESS_METRICS = {
    "initial_sharpness_ratio": (lambda run: largest(sharpness_ratios(run, initial=True)), "loss"),
    "peak_sharpness_ratio": (lambda run: largest(sharpness_ratios(run)), "loss"),
    "final_sharpness_ratio": (lambda run: last_value(sharpness_ratios(run)), "loss"),
}
ALL_METRICS = {**METRICS, **SHARPNESS_METRICS}


def metric_values(runs, metric):
    """Values of `metric` over finished runs, and how many diverged runs a loss metric left out."""
    read, kind = ALL_METRICS[metric]
    values, excluded = [], 0
    for run in runs:
        if not run.finished:
            continue
        value = read(run)
        if not math.isfinite(value):
            if kind == "accuracy" and run.diverged:
                value = 0.0
            else:
                excluded += 1
                continue
        values.append(value)
    return values, excluded


def summarize_variant(name, runs):
    finished = [run for run in runs if run.finished]
    diverged = [run for run in finished if run.diverged]
    trained = [outcome_of(run).trained for run in finished]
    norms = np.concatenate([run.steps.get("grad_norm", np.array([])) for run in finished] or [np.array([])])
    norms = norms[np.isfinite(norms)]
    # A long run's log keeps block peaks besides its even sample: the median reads the sample only.
    sample = np.concatenate([run.sampled_steps("grad_norm") for run in finished] or [np.array([])])
    sample = sample[np.isfinite(sample)]
    metrics = {}
    measured = [*METRICS, *(SHARPNESS_METRICS if any(run.sharpness for run in finished) else ())]
    for metric in measured:
        values, excluded = metric_values(runs, metric)
        metrics[metric] = {**asdict(mean_ci(values)), "values": values, "excluded": excluded}
    clip_shares = [
        float(np.mean(run.epoch_values("clip_rate"))) for run in finished if len(run.epoch_values("clip_rate"))
    ]
    epoch_seconds = [run.meta["timings"]["seconds_per_epoch"] for run in finished if "timings" in run.meta]
    return {
        "variant": name,
        "runs": len(runs),
        "finished": len(finished),
        "unfinished": [{"seed": run.seed, "status": run.status} for run in runs if not run.finished],
        "diverged": len(diverged),
        "diverged_at_steps": [run.diverged_at_step for run in diverged],
        # Steps with a non-finite gradient per finished run, whatever the policy did with them.
        "nonfinite_steps": [run.nonfinite_steps for run in finished],
        # None when the dataset has no chance level (a regression task such as the adding problem).
        "trained": None if None in trained else sum(trained),
        "metrics": metrics,
        "clip_share": asdict(mean_ci(clip_shares)),
        "grad_norm_max": float(norms.max()) if len(norms) else math.nan,
        "grad_norm_median": float(np.median(sample)) if len(sample) else math.nan,
        "grad_norm_sampled_every": max((run.step_stride for run in finished), default=1),
        "seconds_per_epoch": asdict(mean_ci(epoch_seconds)),
        "epoch_seconds": epoch_seconds,  # per finished run; the report shows median and range
    }


def compare(variant, baseline):
    """Each metric of `variant` against `baseline` (summaries from `summarize_variant`)."""
    result = {}
    for metric in [name for name in variant["metrics"] if name in baseline["metrics"]]:
        result[metric] = asdict(
            compare_means(variant["metrics"][metric]["values"], baseline["metrics"][metric]["values"])
        )
    result["divergence_rate"] = asdict(
        compare_rates(variant["diverged"], variant["finished"], baseline["diverged"], baseline["finished"])
    )
    if variant["trained"] is not None and baseline["trained"] is not None:
        result["trained_rate"] = asdict(
            compare_rates(variant["trained"], variant["finished"], baseline["trained"], baseline["finished"])
        )
    return result


def solved_count(summary, solved_mse):
    """How many of a variant's finished runs reached a test loss (MSE) at or below `solved_mse`: the
    share of runs that solved a regression task such as the adding problem. A diverged run, whose test
    loss is not finite, did not.

    >>> solved_count({"metrics": {"test_loss": {"values": [0.004, 0.01, 0.16]}}}, 0.01)
    2
    """
    return sum(value <= solved_mse for value in summary["metrics"]["test_loss"]["values"])


def compare_solved(variant, baseline, solved_mse):
    """The share of runs solved (`solved_count`) of `variant` against `baseline`, Fisher's exact test."""
    return asdict(
        compare_rates(
            solved_count(variant, solved_mse),
            variant["finished"],
            solved_count(baseline, solved_mse),
            baseline["finished"],
        )
    )


def summarize(experiment):
    """The experiment's summary: every variant, and every non-baseline variant against the baseline."""
    variants = {name: summarize_variant(name, runs) for name, runs in experiment.variants.items()}
    baseline = variants[experiment.baseline]
    return {
        "experiment": experiment.name,
        "trained_rule": TRAINED_RULE,
        "description": experiment.description,
        "baseline": experiment.baseline,
        "variants": variants,
        "comparisons": {
            name: compare(summary, baseline) for name, summary in variants.items() if name != experiment.baseline
        },
    }
