"""report.md, a self-contained report.html (images inlined) and summary.json for one experiment,
and the claims ledger for all of them."""

import base64
import html
import json
import math
import os

from keras_stability.experiments.storage import atomic_write_json, atomic_write_text
from keras_stability.report.statistics import Comparison, Estimate

METRIC_TITLES = {
    "final_val_accuracy": "final val accuracy",
    "best_val_accuracy": "best val accuracy",
    "test_accuracy": "test accuracy",
    "final_val_loss": "final val loss",
    "test_loss": "test loss",
    "first_val_accuracy": "val accuracy after epoch 1",
    "generalization_gap": "train − val accuracy (final)",
    "log10_max_grad_norm": "log10 max grad norm",
    "divergence_rate": "divergence rate",
}
PLOT_TITLES = {
    "curves.png": "Learning curves",
    "gradient_norms.png": "Gradient norm per step, before and after the transform",
    "norm_distribution.png": "Distribution of gradient norms",
}


def estimate_text(data, digits=4):
    return Estimate(data["mean"], data["ci"], data["n"]).text(digits)


def comparison_text(data):
    return Comparison(data["difference"], data["ci"], data["p_value"], data["test"], data["alpha"]).text()


def number(value, digits=3):
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def variant_rows(summary):
    rows = []
    for name, variant in summary["variants"].items():
        steps = ", ".join(str(s) for s in variant["diverged_at_steps"] if s is not None)
        unfinished = ", ".join(f"seed {u['seed']}: {u['status']}" for u in variant["unfinished"])
        rows.append([
            name + (" (baseline)" if name == summary["baseline"] else ""),
            f"{variant['finished']}/{variant['runs']}" + (f" — {unfinished}" if unfinished else ""),
            f"{variant['diverged']}/{variant['finished']}" + (f" (steps {steps})" if steps else ""),
            *(estimate_text(variant["metrics"][m]) + (f", {variant['metrics'][m]['excluded']} diverged left out" if variant["metrics"][m]["excluded"] else "")
              for m in ("final_val_accuracy", "best_val_accuracy", "test_accuracy", "final_val_loss")),
            estimate_text(variant["clip_share"], 3),
            f"{number(variant['grad_norm_max'])} / {number(variant['grad_norm_median'])}",
            estimate_text(variant["seconds_per_epoch"], 2),
        ])
    return ["variant", "finished", "diverged", "final val accuracy", "best val accuracy", "test accuracy",
            "final val loss", "share of steps clipped", "grad norm max / median", "s per epoch"], rows


def comparison_rows(summary):
    rows = []
    for name, comparisons in summary["comparisons"].items():
        for metric, data in comparisons.items():
            rows.append([f"{name} − {summary['baseline']}", METRIC_TITLES[metric], comparison_text(data)])
    return ["comparison", "metric", "difference (95% CI, test, verdict at α = 0.05)"], rows


def claim_rows(verdicts):
    rows = []
    for verdict in verdicts:
        claim = verdict["claim"]
        rows.append([claim["id"], claim["text"], claim["source"],
                     f"{claim['experiment']}: {claim['variant']} vs {(verdict['comparison'] or {}).get('baseline', claim['baseline'] or 'baseline')}, "
                     f"{METRIC_TITLES[claim['metric']]} {claim['expect']}",
                     verdict["verdict"].upper(), verdict["reason"]])
    return ["id", "claim", "source", "test", "verdict", "evidence"], rows


def markdown_table(header, rows):
    escape = lambda cell: str(cell).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header, rows, css_class):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #bbb;padding:4px 8px;text-align:left}
th{background:#eef}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
.CONFIRMED{color:#060;font-weight:bold}.REFUTED{color:#a00;font-weight:bold}.INCONCLUSIVE{color:#666}"""


def html_page(title, sections):
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n")


def inline_image(path):
    with open(path, "rb") as stream:
        return "data:image/png;base64," + base64.b64encode(stream.read()).decode("ascii")


def write_experiment_report(summary, plots, verdicts, directory):
    """Writes report.md, report.html and summary.json into `directory` (plots already there)."""
    variants = variant_rows(summary)
    comparisons = comparison_rows(summary)
    claims = claim_rows(verdicts)
    title = f"Experiment {summary['experiment']}"
    note = ("Means ± 95% t-intervals over seeds. Diverged runs count as failures (accuracy 0 when not finite); "
            "unfinished runs are listed, never averaged.")
    markdown = [f"# {title}", "", summary["description"].strip(), "", note, "", "## Variants", "",
                markdown_table(*variants), "", f"## Against the baseline ({summary['baseline']})", "",
                markdown_table(*comparisons), ""]
    if verdicts:
        markdown += ["## Claims", "", markdown_table(*claims), ""]
    sections = [f"<p>{html.escape(summary['description'].strip())}</p><p>{html.escape(note)}</p>",
                "<h2>Variants</h2>", html_table(*variants, "variants"),
                f"<h2>Against the baseline ({html.escape(summary['baseline'])})</h2>", html_table(*comparisons, "comparisons")]
    if verdicts:
        sections += ["<h2>Claims</h2>", claims_html(claims)]
    for name in plots:
        markdown += [f"## {PLOT_TITLES[name]}", "", f"![{PLOT_TITLES[name]}]({name})", ""]
        sections += [f"<h2>{html.escape(PLOT_TITLES[name])}</h2>",
                     f'<img alt="{html.escape(PLOT_TITLES[name])}" src="{inline_image(os.path.join(directory, name))}">']
    atomic_write_text(os.path.join(directory, "report.md"), "\n".join(markdown))
    atomic_write_text(os.path.join(directory, "report.html"), html_page(title, sections))
    atomic_write_json(os.path.join(directory, "summary.json"), json.loads(json.dumps(summary, default=str)))


def claims_html(claims):
    header, rows = claims
    table = html_table(header, rows, "claims")
    for verdict in ("CONFIRMED", "REFUTED", "INCONCLUSIVE"):
        table = table.replace(f"<td>{verdict}</td>", f'<td class="{verdict}">{verdict}</td>')
    return table


def write_ledger(verdicts, directory, report_links):
    """claims.md, claims.html and claims.json: every claim with its verdict and numbers, and links to
    the experiment reports."""
    atomic_write_json(os.path.join(directory, "claims.json"), verdicts)
    claims = claim_rows(verdicts)
    counts = {v: sum(1 for d in verdicts if d["verdict"] == v) for v in ("confirmed", "refuted", "inconclusive")}
    tally = ", ".join(f"{n} {v}" for v, n in counts.items())
    links = "\n".join(f"- [{name}]({link})" for name, link in sorted(report_links.items()))
    atomic_write_text(os.path.join(directory, "claims.md"),
                      f"# Claims ledger\n\n{tally}.\n\n{markdown_table(*claims)}\n\n## Reports\n\n{links}\n")
    link_items = "".join(f'<li><a href="{html.escape(link)}">{html.escape(name)}</a></li>' for name, link in sorted(report_links.items()))
    atomic_write_text(os.path.join(directory, "claims.html"),
                      html_page("Claims ledger", [f"<p>{html.escape(tally)}.</p>", claims_html(claims),
                                                  f"<h2>Reports</h2><ul>{link_items}</ul>"]))
