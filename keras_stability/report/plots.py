"""Plots of one experiment (PNG): learning curves, gradient norms over steps, norm distributions."""

import os
import warnings

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

CURVES = (
    ("train_loss", "train loss"),
    ("val_loss", "validation loss"),
    ("train_accuracy", "train accuracy"),
    ("val_accuracy", "validation accuracy"),
)
STEP_NORMS = ("grad_norm", "clipped_norm")


def stacked(series):
    """Runs × positions array of one column's `series`, NaN-padded to the longest (diverged runs stop early)."""
    length = max((len(s) for s in series), default=0)
    table = np.full((len(series), length), np.nan)
    for row, values in enumerate(series):
        table[row, : len(values)] = values
    return table


def band(axis, x, table, color, label, linestyle="-"):
    # Epochs where every run has diverged have no mean: NaN, not a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        finite = np.where(np.isfinite(table), table, np.nan)
        mean = np.nanmean(finite, axis=0)
        low, high = np.nanmin(finite, axis=0), np.nanmax(finite, axis=0)
    axis.plot(x, mean, color=color, linestyle=linestyle, label=label, linewidth=1.6)
    axis.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)


def curves(experiment, path):
    """2×2 grid: train/validation × loss/accuracy, mean over seeds with a min–max band; × = diverged."""
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (variant, runs) in enumerate(experiment.variants.items()):
        finished = [run for run in runs if run.finished]
        if not finished:
            continue
        color = colors[index % len(colors)]
        for axis, (column, title) in zip(axes.flat, CURVES):
            table = stacked([run.epoch_values(column) for run in finished])
            band(axis, np.arange(1, table.shape[1] + 1), table, color, f"{variant} (n={len(finished)})")
            for run in finished:
                values = run.epoch_values(column)
                if run.diverged and len(values):
                    axis.plot(
                        len(values), np.nan_to_num(values[-1], nan=0.0, posinf=0.0), "x", color=color, markersize=9
                    )
            axis.set_title(title)
            axis.set_xlabel("epoch")
            axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for axis, (column, _) in zip(axes.flat, CURVES):
        if "loss" in column and all(
            line.get_ydata().size and np.nanmin(line.get_ydata()) > 0
            for line in axis.lines
            if line.get_linestyle() == "-"
        ):
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    figure.suptitle(f"{experiment.name}: mean over seeds, band = min–max, × = diverged run")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def gradient_norms(experiment, path):
    """Global gradient norm before (solid) and after (dashed) the transform per step, log scale."""
    figure, axis = plt.subplots(figsize=(11, 4.5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (variant, runs) in enumerate(experiment.variants.items()):
        finished = [run for run in runs if run.finished and len(run.steps.get("grad_norm", []))]
        if not finished:
            continue
        color = colors[index % len(colors)]
        before, after = (stacked([run.sampled_steps(column) for run in finished]) for column in STEP_NORMS)
        # A variant's runs share one configuration, so one thinning stride (`step_thinning`).
        steps = np.arange(1, before.shape[1] + 1) * finished[0].step_stride
        band(axis, steps, before, color, f"{variant}: before")
        band(axis, steps, after, color, f"{variant}: after", "--")
        for run in finished:
            if run.diverged_at_step:
                axis.axvline(run.diverged_at_step, color=color, linestyle=":", linewidth=1)
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("global gradient norm")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    axis.set_title(f"{experiment.name}: gradient norm per step (mean over seeds; dotted = divergence)")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def norm_distribution(experiment, path):
    """Histogram of log10 of every step's pre-transform global norm, per variant."""
    figure, axis = plt.subplots(figsize=(11, 4), constrained_layout=True)
    for variant, runs in experiment.variants.items():
        finished = [run for run in runs if run.finished]
        norms = np.concatenate([run.sampled_steps("grad_norm") for run in finished] or [np.array([])])
        norms = norms[np.isfinite(norms) & (norms > 0)]
        every = max((run.step_stride for run in finished), default=1)
        if len(norms):
            steps = f"{len(norms)} steps" + (f", 1 in {every}" if every > 1 else "")
            axis.hist(np.log10(norms), bins=50, alpha=0.45, label=f"{variant} ({steps})")
    axis.set_xlabel("log10 global gradient norm (before the transform)")
    axis.set_ylabel("steps")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"{experiment.name}: distribution of gradient norms")
    figure.savefig(path, dpi=90)
    plt.close(figure)


PLOTS = {"curves.png": curves, "gradient_norms.png": gradient_norms, "norm_distribution.png": norm_distribution}


def draw_all(experiment, directory):
    """Draws every plot into `directory`; returns their file names."""
    os.makedirs(directory, exist_ok=True)
    for name, draw in PLOTS.items():
        draw(experiment, os.path.join(directory, name))
    return list(PLOTS)
