"""Reports over results: statistics across seeds, the analyses, plots, HTML, and the claims ledger.

Where each part lives: `collect` reads runs; `outcomes` reduces them and groups sweeps by their
resolved configuration; `statistics` holds the tests; `summary` the per-variant tables; `boundary`
(with `profile`, the penalised likelihood and its profiles), `tuned`, `tradeoff` the analyses over
swept settings; `analyses` bundles them per experiment; `provenance` the runs' commits and the claims'
registration; `claims` the ledger and `judging` the rules it states; `published` the published
results beside ours; `plots`, `analysis_plots`, `tables`, `templates`, `render` (an experiment's
pages), `ledger_pages` (the ledger's) and `findings` (the findings page's tables) the output; `search_report`
an Optuna study's report.
"""

import importlib

# Submodules load on first use: `collect`, which the runner's event log and `keras_stability.results`
# import, must not pay for matplotlib and scipy.
_EXPORTS = {
    "analyse": "keras_stability.report.analyses",
    "build_reports": "keras_stability.report.build",
    "judge": "keras_stability.report.claims",
    "judge_all": "keras_stability.report.claims",
    "load_claims": "keras_stability.report.claims",
    "summarize": "keras_stability.report.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_stability.report' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
