"""report.md, a self-contained report.html (images inlined) and summary.json for one experiment
(the claims ledger's pages: `ledger_pages`). Pages come from Jinja2 templates (`templates`)."""

import base64
import datetime
import os

from keras_stability.report import analysis_plots
from keras_stability.report.analyses import as_json
from keras_stability.report.tables import (
    METRIC_TITLES,
    boundary_rows,
    comparison_rows,
    sharpness_rows,
    tradeoff_rows,
    tuned_rows,
    variant_rows,
)
from keras_stability.report.templates import render
from keras_stability.runs.divergence import RULE as DIVERGENCE_RULE
from keras_stability.runs.storage import atomic_write_json, atomic_write_text

PLOT_TITLES = {
    "curves.png": "Learning curves",
    "gradient_norms.png": "Gradient norm per step, before and after the transform",
    "norm_distribution.png": "Distribution of gradient norms",
    "boundary.png": "Stability boundary",
    "tuned.png": "Tuned comparison",
    "tradeoff.png": "Threshold trade-off",
    "forest.png": "Forest plot of the ledger",
}
NOTE = (
    "Means ± 95% t-intervals over seeds. Diverged runs count as failures (accuracy 0 when not finite); "
    "unfinished runs are listed, never averaged. Differences: permutation test (exact for small n) with a "
    "95% bootstrap interval; rates: Fisher's exact test with Newcombe's interval; beside a non-significant "
    "difference, the seeds per side a test would need for 80% power at the effect observed."
)


def registered_text(verdict):
    registered = verdict["registered"]
    if registered is None:
        return "not committed"
    day = datetime.datetime.fromtimestamp(registered["time"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{registered['commit'][:10]}, {day}"


def claim_records(verdicts):
    records = []
    for verdict in verdicts:
        claim, comparison = verdict["claim"], verdict["comparison"] or {}
        what = METRIC_TITLES.get(claim["metric"]) if claim["analysis"] == "point" else claim["analysis"]
        if claim["analysis"] == "threshold":
            what += f" at clip rate {claim['clip_rate']:g}"
        evidence = verdict["reason"] + (
            f" — exploratory: {verdict['exploratory_reason']}" if verdict["exploratory"] else ""
        )
        records.append(
            {
                "id": claim["id"],
                "text": claim["text"],
                "source": claim["source"],
                "test": f"{claim['experiment']}: {claim['variant']} vs {comparison.get('baseline', claim['baseline'] or 'baseline')}, "
                f"{what} {claim['expect']}",
                "verdict": verdict["verdict"],
                "exploratory": verdict["exploratory"],
                "evidence": evidence,
                "registered": registered_text(verdict),
            }
        )
    return records


def claims_markdown(records):
    rows = [
        [
            r["id"],
            r["text"],
            r["source"],
            r["test"],
            r["verdict"].upper() + (" (exploratory)" if r["exploratory"] else ""),
            r["evidence"],
            r["registered"],
        ]
        for r in records
    ]
    return markdown_table(["id", "claim", "source", "test", "verdict", "evidence", "registered"], rows)


def markdown_table(header, rows):
    escape = lambda cell: str(cell).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def inline_image(path):
    with open(path, "rb") as stream:
        return "data:image/png;base64," + base64.b64encode(stream.read()).decode("ascii")


def source_lines(provenance):
    return [
        f"{s.runs} run{'s' if s.runs != 1 else ''} from commit {(s.commit or 'unknown')[:10]}"
        + {True: " (dirty working tree)", False: "", None: " (dirty flag unknown)"}[s.dirty]
        for s in provenance.sources
    ]


def draw_analyses(analysis, directory):
    """Draws the analyses' plots that apply to `analysis`; returns their file names."""
    drawn = []
    for name, (draw, applies) in analysis_plots.ANALYSIS_PLOTS.items():
        if applies(analysis):
            draw(analysis, os.path.join(directory, name))
            drawn.append(name)
    return drawn


def write_experiment_report(analysis, plots, verdicts, directory):
    """Writes report.md, report.html and summary.json into `directory` (plots already there)."""
    summary, provenance = analysis.summary, analysis.provenance
    tables = [
        {
            "title": "Variants",
            "css": "variants",
            "note": f"A run diverged: {DIVERGENCE_RULE}. A run trained: it {summary['trained_rule']}.",
            "table": variant_rows(summary),
        },
        {
            "title": f"Against the baseline ({summary['baseline']})",
            "css": "comparisons",
            "note": "",
            "table": comparison_rows(summary),
        },
    ]
    if any("peak_sharpness_ratio" in variant["metrics"] for variant in summary["variants"].values()):
        tables.append(
            {
                "title": "Sharpness",
                "css": "sharpness",
                "note": "The loss Hessian's top eigenvalue (power iteration; Adam's preconditioned one for Adam) over "
                "the optimizer's stability limit (2/η; (2 + 2β)/η with momentum β; Cohen et al. 2021, 2022) at "
                "that time: above 1, a quadratic with that curvature would diverge. Measured on the first "
                "`training.sharpness.examples` training examples, before training and after every "
                "`every_epochs` epochs; the largest is over finite measurements (none after a divergence).",
                "table": sharpness_rows(summary),
            }
        )
    if analysis.swept:
        tables += [
            {"title": "Stability boundary", "css": "boundary", "note": "", "table": boundary_rows(analysis)},
            {"title": "Tuned comparison", "css": "tuned", "note": "", "table": tuned_rows(analysis)},
        ]
    if analysis.curves:
        tables.append({"title": "Threshold trade-off", "css": "tradeoff", "note": "", "table": tradeoff_rows(analysis)})
    records = claim_records(verdicts)
    title = f"Experiment {summary['experiment']}"
    sources = source_lines(provenance)
    markdown = [f"# {title}", "", summary["description"].strip(), "", NOTE, "", "## Provenance", ""]
    markdown += (
        ([f"**Warning: {provenance.warning}.**", ""] if provenance.warning else []) + [f"- {s}" for s in sources] + [""]
    )
    for table in tables:
        markdown += (
            [f"## {table['title']}", ""]
            + ([table["note"], ""] if table["note"] else [])
            + [markdown_table(*table["table"]), ""]
        )
    if verdicts:
        markdown += ["## Claims", "", claims_markdown(records), ""]
    for name in plots:
        markdown += [f"## {PLOT_TITLES[name]}", "", f"![{PLOT_TITLES[name]}]({name})", ""]
    page = render(
        "experiment.html",
        title=title,
        description=summary["description"].strip(),
        note=NOTE,
        warning=provenance.warning,
        sources=sources,
        claims=records,
        tables=[{**t, "header": t["table"][0], "rows": t["table"][1]} for t in tables],
        plots=[{"title": PLOT_TITLES[n], "src": inline_image(os.path.join(directory, n))} for n in plots],
    )
    atomic_write_text(os.path.join(directory, "report.md"), "\n".join(markdown))
    atomic_write_text(os.path.join(directory, "report.html"), page)
    atomic_write_json(os.path.join(directory, "summary.json"), as_json(analysis))
