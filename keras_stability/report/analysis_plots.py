"""Plots of the analyses (PNG): stability boundaries, tuned learning rates, threshold trade-off, and
the ledger's forest plot."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from keras_stability.report.boundary import curve

VERDICT_COLOURS = {"confirmed": "#1a7f37", "refuted": "#c62828", "inconclusive": "#777777"}


def colours():
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def boundaries(analysis, path):
    """P(divergence) against the learning rate per group: observed k/n, the fitted curve, and the
    critical learning rate (dashed) with its bootstrap interval (shaded)."""
    figure, axis = plt.subplots(figsize=(10, 4.8), constrained_layout=True)
    swept = [b for b in analysis.boundaries if len(b.cells) > 1]
    for index, result in enumerate(swept):
        colour = colours()[index % len(colours())]
        rates = [c.learning_rate for c in result.cells]
        label = result.label + (
            f": critical lr {result.critical_lr:.3g}" if result.critical_lr else f" ({result.note})"
        )
        axis.plot(rates, [c.diverged / c.runs for c in result.cells], "o", color=colour, label=label)
        grid = np.geomspace(min(rates), max(rates), 200)
        fitted = curve(result, grid)
        if fitted is not None:
            axis.plot(grid, fitted, color=colour, linewidth=1.5)
        if result.critical_lr:
            axis.axvline(result.critical_lr, color=colour, linestyle="--", linewidth=1)
            low, high = result.low or min(rates), result.high or max(rates)
            axis.axvspan(low, high, color=colour, alpha=0.12, linewidth=0)
    axis.set_xscale("log")
    axis.set_ylim(-0.05, 1.05)
    axis.axhline(0.5, color="#999", linewidth=0.8)
    axis.set_xlabel("learning rate")
    axis.set_ylabel("share of seeds diverged")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(
        f"{analysis.name}: stability boundary (dots: k/n seeds; line: Firth logistic fit; "
        "dashed: critical lr, band: 95% bootstrap)",
        fontsize=10,
    )
    figure.savefig(path, dpi=90)
    plt.close(figure)


def tuned(analysis, path):
    """Mean validation accuracy against the learning rate per group; the chosen one ringed, with the
    test accuracies of its seeds."""
    figure, axis = plt.subplots(figsize=(10, 4.8), constrained_layout=True)
    for index, result in enumerate(t for t in analysis.tuned if len(t.settings) > 1):
        colour = colours()[index % len(colours())]
        rates = [s.learning_rate for s in result.settings]
        axis.plot(
            rates,
            [s.val_accuracy for s in result.settings],
            "-o",
            color=colour,
            label=f"{result.label}: best lr {result.best_lr:g}, test {np.mean(result.test_accuracies):.3f}",
        )
        best = next(s for s in result.settings if s.learning_rate == result.best_lr)
        axis.plot(best.learning_rate, best.val_accuracy, "o", markersize=14, markerfacecolor="none", color=colour)
        axis.plot(
            [best.learning_rate] * len(result.test_accuracies), result.test_accuracies, "_", markersize=14, color=colour
        )
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("accuracy")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(
        f"{analysis.name}: tuned comparison (line: mean best val accuracy; ring: chosen lr; "
        "dashes: test accuracy per seed there)",
        fontsize=10,
    )
    figure.savefig(path, dpi=90)
    plt.close(figure)


def tradeoff(analysis, path):
    """Test accuracy and divergence against the threshold (left) and the share of steps clipped (right)."""
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True, sharey="row")
    for index, result in enumerate(c for c in analysis.curves if len(c.points) > 1):
        colour = colours()[index % len(colours())]
        label = f"{result.label} ({result.transform})"
        thresholds = [p.threshold for p in result.points]
        shares = [math.nan if p.clip_share is None else p.clip_share for p in result.points]
        for row, values in enumerate(
            ([p.test_accuracy for p in result.points], [p.diverged / p.runs for p in result.points])
        ):
            axes[row, 0].plot(thresholds, values, "-o", color=colour, label=label)
            axes[row, 1].plot(shares, values, "-o", color=colour, label=label)
    for axis in axes[:, 0]:
        axis.set_xscale("log")
        axis.set_xlabel("threshold")
    for axis in axes[:, 1]:
        axis.set_xlabel("share of steps clipped")
    axes[0, 0].set_ylabel("mean test accuracy")
    axes[1, 0].set_ylabel("share of seeds diverged")
    for axis in axes.flat:
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    figure.suptitle(f"{analysis.name}: threshold trade-off — compare transforms at the same share of steps clipped")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def forest(verdicts, path):
    """Every tested claim's effect with its 95% interval, coloured by verdict: differences (left) and
    ratios of critical learning rates (right, log scale)."""
    tested = [v for v in verdicts if v["comparison"] and v["comparison"]["difference"] is not None]
    ratios = [v for v in tested if v["comparison"]["measure"] == "ratio"]
    differences = [v for v in tested if v["comparison"]["measure"] != "ratio"]
    panels = [(group, neutral) for group, neutral in ((differences, 0.0), (ratios, 1.0)) if group]
    height = 1.2 + 0.28 * max([len(group) for group, _ in panels] or [1])
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(12, height), constrained_layout=True, squeeze=False)
    for axis, (group, neutral) in zip(axes[0], panels):
        for row, verdict in enumerate(reversed(group)):
            comparison, colour = verdict["comparison"], VERDICT_COLOURS[verdict["verdict"]]
            low, high = comparison["low"], comparison["high"]
            if low is not None and high is not None:
                axis.plot([low, high], [row, row], color=colour, linewidth=2)
            marker = "o" if not verdict["exploratory"] else "D"
            axis.plot(
                comparison["difference"],
                row,
                marker,
                color=colour,
                markerfacecolor="white" if verdict["exploratory"] else colour,
            )
        axis.set_yticks(range(len(group)), [v["claim"]["id"] for v in reversed(group)], fontsize=8)
        axis.axvline(neutral, color="#444", linewidth=0.8)
        axis.grid(axis="x", alpha=0.3)
        if neutral == 1.0:
            axis.set_xscale("log")
            axis.set_xlabel("ratio of critical learning rates (variant / baseline)")
        else:
            axis.set_xlabel("difference, variant − baseline (in each claim's metric)")
    handles = [plt.Line2D([], [], color=c, marker="o", linewidth=2, label=v) for v, c in VERDICT_COLOURS.items()]
    handles.append(
        plt.Line2D([], [], color="#444", marker="D", markerfacecolor="white", linewidth=0, label="exploratory")
    )
    axes[0, 0].legend(handles=handles, fontsize=8, loc="lower right")
    figure.suptitle("Claims ledger: effect with 95% interval, coloured by verdict (after Benjamini–Hochberg)")
    figure.savefig(path, dpi=90)
    plt.close(figure)


ANALYSIS_PLOTS = {
    "boundary.png": (boundaries, lambda analysis: analysis.swept),
    "tuned.png": (tuned, lambda analysis: analysis.swept),
    "tradeoff.png": (tradeoff, lambda analysis: analysis.thresholds_swept),
}
