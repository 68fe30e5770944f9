"""The findings page's experiments, verdict and published-results tables are written from the reports
between marker lines, and nothing else moves."""

import pytest

from keras_stability.report.findings import markers, update_findings
from keras_stability.report.ledger_pages import ledger_markdown, published_markdown, suite_markdown

SUITE = markers("suite")
LEDGER = markers("ledger")
PUBLISHED = markers("published")
ROWS = [["`a`", "x", "11", "2", "9", "1", "abc"], ["`b`", "y", "1000", "0", "–", "0", "def"]]


def test_the_tables_replace_what_stood_between_the_markers(tmp_path):
    page = tmp_path / "findings.md"
    rows = ROWS
    page.write_text(
        f"# Title\n{SUITE[0]}\n3 stale runs\n{SUITE[1]}\nbefore\n{LEDGER[0]}\n| stale | table |\n{LEDGER[1]}\nbetween\n"
        f"{PUBLISHED[0]}\nold\n{PUBLISHED[1]}\nafter\n",
        encoding="utf-8",
    )
    update_findings(str(page), [], [], rows)
    expected = (
        f"# Title\n{SUITE[0]}\n{suite_markdown(rows)}\n{SUITE[1]}\nbefore\n{LEDGER[0]}\n{ledger_markdown([])}\n"
        f"{LEDGER[1]}\nbetween\n{PUBLISHED[0]}\n{published_markdown([])}\n{PUBLISHED[1]}\nafter\n"
    )
    assert suite_markdown(rows).endswith("\n\n2 experiments, 1,011 finished runs.")
    assert page.read_text(encoding="utf-8") == expected
    assert ledger_markdown([]).startswith(
        "0 confirmed, 0 refuted, 0 stable but does not train, 0 unanswerable, 0 inconclusive; 0 exploratory."
    )
    update_findings(str(page), [], [], rows)  # idempotent
    assert page.read_text(encoding="utf-8") == expected


@pytest.mark.parametrize(
    "text",
    [
        "no markers\n",
        f"{SUITE[0]}\n{SUITE[1]}\n{LEDGER[1]}\n{LEDGER[0]}\n{PUBLISHED[0]}\n{PUBLISHED[1]}\n",
        f"{SUITE[0]}\n{SUITE[1]}\n{LEDGER[0]}\n{LEDGER[0]}\n{LEDGER[1]}\n{PUBLISHED[0]}\n{PUBLISHED[1]}\n",
        f"{SUITE[0]}\n{SUITE[1]}\n{LEDGER[0]}\n{LEDGER[1]}\n",  # the published block missing: nothing is written
        f"{LEDGER[0]}\n{LEDGER[1]}\n{PUBLISHED[0]}\n{PUBLISHED[1]}\n",  # the suite block missing
    ],
)
def test_markers_missing_repeated_or_out_of_order_are_refused(tmp_path, text):
    page = tmp_path / "findings.md"
    page.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="needs the two lines"):
        update_findings(str(page), [], [], ROWS)
    assert page.read_text(encoding="utf-8") == text
