"""The experiment report's tables as (header, rows) of text cells: variants, comparisons with the
baseline, stability boundaries, tuned comparisons and threshold trade-offs."""

import numpy as np

from keras_stability.report.statistics import Comparison, Estimate, mean_ci

METRIC_TITLES = {
    "final_val_accuracy": "final val accuracy",
    "best_val_accuracy": "best val accuracy",
    "test_accuracy": "test accuracy",
    "final_val_loss": "final val loss",
    "test_loss": "test loss",
    "first_val_accuracy": "val accuracy after epoch 1",
    "generalization_gap": "train − val accuracy (final)",
    "log10_max_grad_norm": "log10 max grad norm",
    "initial_sharpness_ratio": "sharpness ÷ stability limit, before training",
    "peak_sharpness_ratio": "sharpness ÷ stability limit, largest measured",
    "final_sharpness_ratio": "sharpness ÷ stability limit, last finite measurement",
    "divergence_rate": "divergence rate",
    "trained_rate": "share of runs trained",
    "solved_rate": "share of runs solved (test MSE at or below the claim's solved_mse)",
}


def estimate_text(data, digits=4):
    return Estimate(data["mean"], data["ci"], data["n"]).text(digits)


def comparison_text(data):
    fields = Comparison.__dataclass_fields__
    return Comparison(
        **{k: float("nan") if v is None and k != "seeds_needed" else v for k, v in data.items() if k in fields}
    ).text()


def short_number(value, digits=3):
    """`value` to `digits` significant figures; "–" for None or a non-finite value."""
    return "–" if value is None or value != value or value in (float("inf"), float("-inf")) else f"{value:.{digits}g}"


def variant_rows(summary):
    rows = []
    for name, variant in summary["variants"].items():
        steps = ", ".join(str(s) for s in variant["diverged_at_steps"] if s is not None)
        unfinished = ", ".join(f"seed {u['seed']}: {u['status']}" for u in variant["unfinished"])
        trained = "–" if variant["trained"] is None else f"{variant['trained']}/{variant['finished']}"
        rows.append(
            [
                name + (" (baseline)" if name == summary["baseline"] else ""),
                f"{variant['finished']}/{variant['runs']}" + (f" — {unfinished}" if unfinished else ""),
                f"{variant['diverged']}/{variant['finished']}" + (f" (steps {steps})" if steps else ""),
                nonfinite_text(variant.get("nonfinite_steps", [])),
                trained,
                *(
                    estimate_text(variant["metrics"][m])
                    + (
                        f", {variant['metrics'][m]['excluded']} diverged left out"
                        if variant["metrics"][m]["excluded"]
                        else ""
                    )
                    for m in ("final_val_accuracy", "best_val_accuracy", "test_accuracy", "final_val_loss")
                ),
                estimate_text(variant["clip_share"], 3),
                f"{short_number(variant['grad_norm_max'])} / {short_number(variant['grad_norm_median'])}"
                + (f" (1 step in {every})" if (every := variant["grad_norm_sampled_every"]) > 1 else ""),
                spread_text(variant.get("epoch_seconds", [])),
            ]
        )
    return [
        "variant",
        "finished",
        "diverged",
        "steps with a non-finite gradient",
        "trained",
        "final val accuracy",
        "best val accuracy",
        "test accuracy",
        "final val loss",
        "share of steps clipped",
        "grad norm max / median",
        "s per epoch, median (range)",
    ], rows


def nonfinite_text(counts):
    """A variant's steps with a non-finite gradient: their total and how many runs had any."""
    runs = sum(1 for count in counts if count)
    return f"{sum(counts)} ({runs} run{'s' if runs != 1 else ''})" if runs else "0"


def spread_text(values, digits=2):
    """Median and range: wall times are skewed by whatever else the machine ran, so no mean ± interval."""
    if not len(values):
        return "–"
    return f"{np.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def comparison_rows(summary):
    rows = []
    for name, comparisons in summary["comparisons"].items():
        for metric, data in comparisons.items():
            rows.append([f"{name} − {summary['baseline']}", METRIC_TITLES[metric], comparison_text(data)])
    return ["comparison", "metric", "effect [95% interval] (test, verdict at α = 0.05)"], rows


SHARPNESS_COLUMNS = ("initial_sharpness_ratio", "peak_sharpness_ratio", "final_sharpness_ratio")


def sharpness_rows(summary):
    """Per variant with `training.sharpness`: its sharpness against the optimizer's stability limit."""
    rows = [
        [name, *(estimate_text(variant["metrics"][m], 3) for m in SHARPNESS_COLUMNS)]
        for name, variant in summary["variants"].items()
        if "peak_sharpness_ratio" in variant["metrics"]
    ]
    return ["variant", *(METRIC_TITLES[m] for m in SHARPNESS_COLUMNS)], rows


def boundary_rows(analysis):
    rows = []
    for result in analysis.boundaries:
        if len(result.cells) < 2:
            continue
        cells = ", ".join(
            f"{c.learning_rate:g}: {c.diverged}/{c.runs}" + ("" if c.trained is None else f" ({c.trained} trained)")
            for c in result.cells
        )
        interval = f"[{short_number(result.low)}, {short_number(result.high)}]"
        critical = result.note if result.critical_lr is None else f"{result.critical_lr:.3g} {interval}"
        if result.nonmonotone:
            critical += f"; non-monotone: {result.nonmonotone}"
        rows.append([result.label, cells, critical])
    header = ["runs (variants)", "diverged per learning rate", "critical learning rate [95% profile likelihood]"]
    return header, rows


def tuned_rows(analysis):
    rows = []
    for result in analysis.tuned:
        if len(result.settings) < 2:
            continue
        tried = ", ".join(f"{s.learning_rate:g}: {s.val_accuracy:.3f}" for s in result.settings)
        test = mean_ci(result.test_accuracies).text()
        rows.append([result.label, tried, f"{result.best_lr:g}", test])
    seeds = next((r for r in analysis.tuned if r.selection_seeds), None)
    chosen = f"seeds {seed_list(seeds.selection_seeds)}" if seeds else "the selection seeds"
    tested = f"seeds {seed_list(seeds.test_seeds)}" if seeds else "the others"
    header = [
        "runs (variants)",
        f"mean best val accuracy per learning rate ({chosen})",
        "best lr",
        f"test accuracy there ({tested})",
    ]
    return header, rows


def seed_list(seeds):
    return (
        f"{seeds[0]}–{seeds[-1]}"
        if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[-1] + 1))
        else ", ".join(map(str, seeds))
    )


def tradeoff_rows(analysis):
    rows = []
    for result in analysis.curves:
        for point in result.points:
            trained = "–" if point.trained is None else f"{point.trained}/{point.runs}"
            rows.append(
                [
                    f"{result.label} ({result.transform})",
                    f"{point.threshold:g}",
                    short_number(point.clip_share),
                    f"{point.diverged}/{point.runs}",
                    trained,
                    f"{point.test_accuracy:.4f}",
                ]
            )
    return [
        "runs (transform)",
        "threshold",
        "share of steps clipped",
        "diverged",
        "trained",
        "mean test accuracy",
    ], rows
