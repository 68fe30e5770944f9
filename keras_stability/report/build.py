"""`build_reports`: every experiment's report and the claims ledger, from a results directory."""

import os
from dataclasses import dataclass

from keras_stability.report.analyses import analyse
from keras_stability.report.claims import judge_all, load_claims_file
from keras_stability.report.collect import collect
from keras_stability.report.ledger_pages import suite_rows, write_ledger
from keras_stability.report.plots import draw_all
from keras_stability.report.provenance import registrations
from keras_stability.report.published import measure_all
from keras_stability.report.render import draw_analyses, write_experiment_report
from keras_stability.runs.integrity import RERUN_ADVICE


@dataclass(frozen=True)
class BuiltReports:
    pages: dict  # {experiment: its report.html}
    verdicts: list  # the claims ledger, one dict per claim (`claims.judge`)
    published: list  # the published-results rows (`published.measure`)
    suite: list  # one row per experiment (`ledger_pages.suite_rows`)


def build_reports(results, output=None, claims_path=None, log=print):
    """Reports every experiment under `results` into `output` (one experiment: `output` itself;
    several: `output/<experiment>/`), plus the claims ledger when a claims file is given.

    `output` defaults to reports/<experiment> for one experiment's directory, else reports/.

    Returns the report pages, the claim verdicts, the published-results rows and the experiments'
    table (`BuiltReports`).
    """
    experiments = collect(results)
    for run in (run for experiment in experiments.values() for run in experiment.damaged()):
        log(f"{run.damage} (listed as damaged, never averaged); {RERUN_ADVICE}")
    ledger = load_claims_file(claims_path) if claims_path else None
    claims = ledger.claims if ledger else []
    analyses = {name: analyse(experiment) for name, experiment in experiments.items()}
    verdicts = judge_all(claims, analyses, registrations(claims_path) if claims else {})
    published = measure_all(ledger.published, analyses) if ledger else []
    name = os.path.basename(os.path.normpath(results))
    single = set(experiments) == {name}
    output = output or (os.path.join("reports", name) if single else "reports")
    reports = {}
    for name, experiment in experiments.items():
        directory = output if single else os.path.join(output, name)
        plots = draw_all(experiment, directory) + draw_analyses(analyses[name], directory)
        related = [v for v in verdicts if v["claim"]["experiment"] == name]
        write_experiment_report(analyses[name], plots, related, directory)
        reports[name] = os.path.join(directory, "report.html")
        log(f"{name}: {reports[name]}")
        if analyses[name].provenance.warning:
            log(f"{name}: warning: {analyses[name].provenance.warning}")
    if claims:
        links = {name: os.path.relpath(path, output) for name, path in reports.items()}
        write_ledger(verdicts, published, output, links)
        log(f"claims ledger: {os.path.join(output, 'claims.html')}")
    return BuiltReports(reports, verdicts, published, suite_rows(analyses))
