"""The ledger's judging rules as the pages state them: the family its p-values are adjusted over,
the verdicts a claim can get, and every rule changed after a look at results — one source for
claims.md, claims.html and the findings page."""

from keras_stability.report.outcomes import TRAINED_RULE
from keras_stability.runs.divergence import RULE as DIVERGENCE_RULE

VERDICTS = ("confirmed", "refuted", "stable but does not train", "unanswerable", "inconclusive")

FAMILY = (
    "One family, fixed before the runs: the confirmatory claims (registered before their experiment's "
    "first result and not marked exploratory). Their p-values are adjusted together by Benjamini–Hochberg "
    "(α 0.05); exploratory claims, the quickstart's among them (gitignored results, 2 seeds), are judged "
    "alone and stay outside it."
)

VERDICT_RULES = (
    f"Diverged: {DIVERGENCE_RULE}. Trained: {TRAINED_RULE}. A stability claim (a boundary, or a lower "
    "divergence rate) is confirmed only where its arm also trains — in most seeds of a learning rate at "
    "which most of the baseline's seeds diverge (boundary), or in most seeds (divergence rate); "
    "otherwise it is 'stable but does not train'. A boundary claim whose baseline does not cross one "
    "half inside its grid is 'unanswerable' (by design: the grid cannot decide it), and one whose cells "
    "fall significantly with the learning rate is inconclusive."
)

# Every change of a judging rule made after a look at results, oldest first.
RULE_CHANGES = (
    "First edition: seeds per side raised from 5 to 10 after the first runs, and the ledger's correction "
    "switched from Holm to Benjamini–Hochberg (ededdfc4 → 79fdf376); under Holm 17 of that ledger's "
    "verdicts, all 9 confirmed boundaries among them, would have flipped.",
    "Second edition: a sweep group in which no run diverged bounds its critical learning rate by the "
    "grid's end (an intersection-union test) instead of having none.",
    "Second edition: a threshold claim compares clip rates within 10 points of its target only.",
    "Second edition: a fitted curve crossing one half past its grid's end is bounded by the grid, not extrapolated.",
    "Third edition (issue 24, after reading the second edition's results): one divergence rule for every "
    "arm instead of each arm's non-finite policy; 'stable but does not train' and 'unanswerable' "
    "verdicts; chance from the task's number of classes; profile-likelihood intervals and "
    "likelihood-ratio p-values for boundaries instead of a bootstrap at the observed rates (whose "
    "p-values stopped at 0.002), with a check for non-monotone cells; tuned comparisons choose the "
    "learning rate on validation with seeds 0–4 and test on the others; the family holds confirmatory "
    "claims only. The third edition's claims were registered before their runs, and these rules written "
    "while those runs trained, without a look at their results.",
)


def rules_markdown() -> str:
    """The family, the verdict rules and the list of rule changes, as Markdown."""
    changes = "\n".join(f"- {change}" for change in RULE_CHANGES)
    return f"{FAMILY}\n\n{VERDICT_RULES}\n\nJudging rules changed after a look at results:\n\n{changes}"
