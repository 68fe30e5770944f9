"""The report of one Optuna study: best trials, optimisation history, parameter importances."""

import math
import os
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna

from keras_stability.report.analyses import strict
from keras_stability.report.render import inline_image, markdown_table
from keras_stability.report.templates import render
from keras_stability.runs.storage import atomic_write_json, atomic_write_text


def trial_rows(study, limit=10):
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    finished.sort(key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    rows = []
    for trial in finished[:limit] + others:
        value = "–" if trial.value is None or not math.isfinite(trial.value) else f"{trial.value:.4f}"
        outcome = trial.user_attrs.get("outcome", trial.state.name.lower())
        parameters = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        # A retried trial (its worker was killed) ran in its first attempt's directory.
        rows.append([trial.user_attrs.get("variant", f"trial-{trial.number:04d}"), value, outcome, parameters])
    return ["trial", "objective", "state", "parameters"], rows


def save_plot(draw, study, path):
    try:
        with warnings.catch_warnings():
            # Optuna marks its matplotlib plots "experimental"; their output is what we want.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = draw(study)
    except (ValueError, RuntimeError):  # too few finished trials for this plot
        plt.close("all")
        return False
    axes.figure.set_size_inches(10, 4.5)
    axes.figure.tight_layout()
    axes.figure.savefig(path, dpi=90)
    plt.close("all")
    return True


def write_search_report(study, directory, objective):
    """search.md, search.html (self-contained) and search.json for `study` into `directory`."""
    os.makedirs(directory, exist_ok=True)
    plots = {}
    for name, draw, title in [
        ("history.png", optuna.visualization.matplotlib.plot_optimization_history, "Optimisation history"),
        ("importance.png", optuna.visualization.matplotlib.plot_param_importances, "Parameter importances (fANOVA)"),
    ]:
        if save_plot(draw, study, os.path.join(directory, name)):
            plots[name] = title
    table = trial_rows(study)
    states = {}
    for trial in study.trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    diverged = sum(1 for t in study.trials if t.user_attrs.get("diverged"))
    tally = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + f" ({diverged} diverged)"
    best = study.best_trial if states.get("complete") else None
    headline = (
        f"Best: trial-{best.number:04d}, {objective} = {best.value:.4f}, {best.params}"
        if best
        else "No trial completed yet."
    )
    markdown = [f"# Study {study.study_name}", "", f"Trials: {tally}. {headline}", "", markdown_table(*table), ""]
    for name, title in plots.items():
        markdown += [f"## {title}", "", f"![{title}]({name})", ""]
    figures = [{"title": title, "src": inline_image(os.path.join(directory, name))} for name, title in plots.items()]
    atomic_write_text(os.path.join(directory, "search.md"), "\n".join(markdown))
    atomic_write_text(
        os.path.join(directory, "search.html"),
        render(
            "search.html",
            title=f"Study {study.study_name}",
            headline=f"Trials: {tally}. {headline}",
            header=table[0],
            rows=table[1],
            plots=figures,
        ),
    )
    atomic_write_json(
        os.path.join(directory, "search.json"),
        strict(
            {
                "study": study.study_name,
                "objective": objective,
                "direction": study.direction.name.lower(),
                "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params},
                "trials": [
                    {
                        "number": t.number,
                        "state": t.state.name.lower(),
                        "value": t.value,
                        "params": t.params,
                        "outcome": t.user_attrs.get("outcome"),
                    }
                    for t in study.trials
                ],
            }
        ),
    )
