"""Plots of the analyses (PNG): stability boundaries, tuned learning rates, threshold trade-off, and
the ledger's forest plot."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from keras_stability.report.boundary import curve

VERDICT_COLOURS = {
    "confirmed": "#1a7f37",
    "refuted": "#c62828",
    "stable but does not train": "#e08a00",
    "unanswerable": "#7b5ea7",
    "inconclusive": "#777777",
}
# The forest's panels: claims measured in one unit share a panel; every other measure has its own.
ACCURACY_MEASURES = (
    "test_accuracy",
    "first_val_accuracy",
    "best_val_accuracy",
    "final_val_accuracy",
    "test accuracy at the tuned learning rate",
    "test accuracy at a matched clip rate",
)
RATE_MEASURES = ("divergence_rate", "trained_rate", "solved_rate")


def colours():
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def boundaries(analysis, path):
    """P(divergence) against the learning rate per group: observed k/n, the fitted curve, and the
    critical learning rate (dashed) with its profile-likelihood interval (shaded)."""
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
        "dashed: critical lr, band: 95% profile likelihood)",
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


def forest_panel(verdict) -> str:
    """The panel a tested claim is drawn in: its unit (accuracy, rate) or its own measure."""
    measured = (
        verdict["claim"]["metric"]
        or {
            "boundary": "critical learning rate",
            "tuned": "test accuracy at the tuned learning rate",
            "threshold": "test accuracy at a matched clip rate",
        }[verdict["claim"]["analysis"]]
    )
    if measured in ACCURACY_MEASURES:
        return "difference in accuracy (variant − baseline)"
    if measured in RATE_MEASURES:
        return "difference in rate (variant − baseline)"
    if verdict["comparison"]["measure"] == "ratio":
        return "ratio of critical learning rates (variant / baseline)"
    return f"difference in {measured.replace('_', ' ')} (variant − baseline)"


def arrow_ends(comparison) -> list[float]:
    """Where the arrow of a ratio known only as a bound ends (none for an interval)."""
    if comparison["measure"] != "ratio":
        return []
    if comparison["high"] is None or math.isinf(comparison["high"]):
        return [comparison["difference"] * 4]
    return [comparison["difference"] / 4] if comparison["low"] == 0 else []


def draw_claim(axis, row, verdict):
    """One claim's effect and interval; a censored end (an unbounded ratio) is drawn as an arrow."""
    comparison, colour = verdict["comparison"], VERDICT_COLOURS[verdict["verdict"]]
    low, high, effect = comparison["low"], comparison["high"], comparison["difference"]
    fill = "white" if verdict["exploratory"] else colour
    ends = arrow_ends(comparison)
    if ends:  # only a bound: the ratio lies beyond `effect`
        axis.annotate(
            "",
            xy=(ends[0], row),
            xytext=(effect, row),
            arrowprops={"arrowstyle": "->", "color": colour, "linewidth": 2},
        )
        axis.plot(effect, row, "|", color=colour, markersize=12, markeredgewidth=2)
        return
    if low is not None and high is not None:
        axis.plot([low, high], [row, row], color=colour, linewidth=2)
    axis.plot(effect, row, "o" if not verdict["exploratory"] else "D", color=colour, markerfacecolor=fill)


def forest(verdicts, path):
    """Every tested claim's effect with its 95% interval, coloured by verdict, one panel per unit of
    measure (accuracy, rate, critical-LR ratio on a log scale, and each other measure alone); a ratio
    known only as a bound is an arrow from the bound."""
    tested = [v for v in verdicts if v["comparison"] and v["comparison"]["difference"] is not None]
    panels = {}
    for verdict in tested:
        panels.setdefault(forest_panel(verdict), []).append(verdict)
    rows = [len(group) for group in panels.values()] or [1]
    figure, axes = plt.subplots(
        len(rows),
        1,
        figsize=(11, 1.2 + 0.3 * sum(rows) + 0.6 * len(rows)),
        squeeze=False,
        gridspec_kw={"height_ratios": [r + 1.5 for r in rows]},
        constrained_layout=True,
    )
    for axis, (title, group) in zip(axes[:, 0], panels.items()):
        for row, verdict in enumerate(reversed(group)):
            draw_claim(axis, row, verdict)
        axis.set_yticks(range(len(group)), [v["claim"]["id"] for v in reversed(group)], fontsize=8)
        ratio = title.startswith("ratio")
        axis.axvline(1.0 if ratio else 0.0, color="#444", linewidth=0.8)
        axis.set_ylim(-0.7, len(group) - 0.3)
        axis.grid(axis="x", alpha=0.3)
        if ratio:
            axis.set_xscale("log")
            # An arrow's head (4 × or ¼ × its bound) is an annotation, which autoscaling ignores.
            ends = [x for v in group for x in arrow_ends(v["comparison"])]
            low, high = axis.get_xlim()
            axis.set_xlim(min([low, *ends]) / 1.5, max([high, *ends]) * 1.5)
        axis.set_xlabel(title, fontsize=9)
    handles = [plt.Line2D([], [], color=c, marker="o", linewidth=2, label=v) for v, c in VERDICT_COLOURS.items()]
    handles.append(
        plt.Line2D([], [], color="#444", marker="D", markerfacecolor="white", linewidth=0, label="exploratory")
    )
    axes[0, 0].legend(handles=handles, fontsize=7, loc="best")
    figure.suptitle("Claims ledger: effect with 95% interval per unit of measure, coloured by verdict")
    figure.savefig(path, dpi=90)
    plt.close(figure)


ANALYSIS_PLOTS = {
    "boundary.png": (boundaries, lambda analysis: analysis.swept),
    "tuned.png": (tuned, lambda analysis: analysis.swept),
    "tradeoff.png": (tradeoff, lambda analysis: analysis.thresholds_swept),
}
