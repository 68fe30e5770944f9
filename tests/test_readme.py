"""The README's verdict and published-results tables are written from the ledger between marker lines,
and nothing else moves."""

import pytest

from keras_stability.report.ledger_pages import ledger_markdown, published_markdown
from keras_stability.report.readme import markers, update_readme

LEDGER = markers("ledger")
PUBLISHED = markers("published")


def test_the_tables_replace_what_stood_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Title\n\nbefore\n{LEDGER[0]}\n| stale | table |\n{LEDGER[1]}\nbetween\n{PUBLISHED[0]}\nold\n{PUBLISHED[1]}\nafter\n",
        encoding="utf-8",
    )
    update_readme(str(readme), [], [])
    expected = (
        f"# Title\n\nbefore\n{LEDGER[0]}\n{ledger_markdown([])}\n{LEDGER[1]}\nbetween\n"
        f"{PUBLISHED[0]}\n{published_markdown([])}\n{PUBLISHED[1]}\nafter\n"
    )
    assert readme.read_text(encoding="utf-8") == expected
    assert ledger_markdown([]).startswith(
        "0 confirmed, 0 refuted, 0 stable but does not train, 0 unanswerable, 0 inconclusive; 0 exploratory."
    )
    update_readme(str(readme), [], [])  # idempotent
    assert readme.read_text(encoding="utf-8") == expected


@pytest.mark.parametrize(
    "text",
    [
        "no markers\n",
        f"{LEDGER[1]}\n{LEDGER[0]}\n{PUBLISHED[0]}\n{PUBLISHED[1]}\n",
        f"{LEDGER[0]}\n{LEDGER[0]}\n{LEDGER[1]}\n{PUBLISHED[0]}\n{PUBLISHED[1]}\n",
        f"{LEDGER[0]}\n{LEDGER[1]}\n",  # the published block missing: nothing is written
    ],
)
def test_markers_missing_repeated_or_out_of_order_are_refused(tmp_path, text):
    readme = tmp_path / "README.md"
    readme.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="needs the two lines"):
        update_readme(str(readme), [], [])
    assert readme.read_text(encoding="utf-8") == text
