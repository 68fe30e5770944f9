"""The claims ledger's pages: claims.md, claims.html (with the forest plot) and claims.json, the
published results beside our measurements (published.json), and the Markdown the findings page embeds."""

import os

from keras_stability.report import analysis_plots
from keras_stability.report.analyses import strict
from keras_stability.report.judging import FAMILY, RULE_CHANGES, VERDICT_RULES, VERDICTS, rules_markdown
from keras_stability.report.published import PUBLISHED_HEADER, published_cells
from keras_stability.report.render import PLOT_TITLES, claim_records, claims_markdown, inline_image, markdown_table
from keras_stability.report.templates import render
from keras_stability.runs.storage import atomic_write_json, atomic_write_text

EXPLORATORY_RULE = (
    "Exploratory: registered after the experiment's first result (or marked so); their verdicts "
    "suggest, they do not confirm."
)


def ledger_tally(verdicts):
    counts = {v: sum(1 for d in verdicts if d["verdict"] == v) for v in VERDICTS}
    exploratory = sum(1 for d in verdicts if d["exploratory"])
    return ", ".join(f"{n} {v}" for v, n in counts.items()) + f"; {exploratory} exploratory"


def ledger_markdown(verdicts):
    """The ledger's tally, its judging rules and table in Markdown (claims.md, and the findings page's table)."""
    table = claims_markdown(claim_records(verdicts))
    return f"{ledger_tally(verdicts)}. {EXPLORATORY_RULE}\n\n{rules_markdown()}\n\n{table}"


SUITE_HEADER = ["experiment", "what it runs", "runs", "diverged", "trained", "with non-finite steps", "trained at"]


def suite_rows(analyses) -> list[list[str]]:
    """One row per experiment: its description, its finished runs, how many diverged (the one rule),
    trained (where the task has classes) and met a non-finite gradient, and the commits they came from."""
    rows = []
    for name, analysis in sorted(analyses.items()):
        variants = analysis.summary["variants"].values()
        finished = sum(v["finished"] for v in variants)
        trained = [v["trained"] for v in variants]
        commits = ", ".join(
            f"{(s.commit or 'unknown')[:8]}{' (dirty)' if s.dirty else ''}" for s in analysis.provenance.sources
        )
        rows.append(
            [
                f"`{name}`",
                " ".join(analysis.summary["description"].split()),
                f"{finished}",
                f"{sum(v['diverged'] for v in variants)}",
                "–" if None in trained else f"{sum(trained)}",
                f"{sum(1 for v in variants for count in v['nonfinite_steps'] if count)}",
                commits,
            ]
        )
    return rows


def suite_markdown(rows) -> str:
    """The committed experiments with their counts (the findings page's suite table), and the total."""
    total = sum(int(row[2]) for row in rows)
    return f"{markdown_table(SUITE_HEADER, rows)}\n\n{len(rows)} experiments, {total:,} finished runs."


def published_markdown(published):
    """The published results beside our measurements (claims.md, and the findings page's table)."""
    return markdown_table(PUBLISHED_HEADER, published_cells(published))


def write_ledger(verdicts, published, directory, report_links):
    """claims.md, claims.html (with the forest plot) and claims.json: every claim with its verdict and
    numbers, and links to the experiment reports; published.json and a section of claims.md: the
    published results beside our measurements."""
    atomic_write_json(os.path.join(directory, "claims.json"), strict(verdicts))
    atomic_write_json(os.path.join(directory, "published.json"), strict(published))
    analysis_plots.forest(verdicts, os.path.join(directory, "forest.png"))
    records = claim_records(verdicts)
    tally = ledger_tally(verdicts)
    links = sorted(report_links.items())
    atomic_write_text(
        os.path.join(directory, "claims.md"),
        f"# Claims ledger\n\n{ledger_markdown(verdicts)}\n\n![{PLOT_TITLES['forest.png']}](forest.png)\n\n"
        f"## Published results\n\n{published_markdown(published)}\n\n"
        "## Reports\n\n" + "\n".join(f"- [{name}]({link})" for name, link in links) + "\n",
    )
    atomic_write_text(
        os.path.join(directory, "claims.html"),
        render(
            "ledger.html",
            title="Claims ledger",
            tally=tally,
            rule=EXPLORATORY_RULE,
            family=FAMILY,
            verdict_rules=VERDICT_RULES,
            changes=RULE_CHANGES,
            claims=records,
            published_header=PUBLISHED_HEADER,
            published=published_cells(published),
            links=links,
            plots=[{"title": PLOT_TITLES["forest.png"], "src": inline_image(os.path.join(directory, "forest.png"))}],
        ),
    )
