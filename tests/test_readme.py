"""The README's verdict table is written from the ledger between two marker lines, and nothing else moves."""

import pytest

from keras_stability.report.readme import BEGIN, END, update_readme
from keras_stability.report.render import ledger_markdown


def test_the_table_replaces_what_stood_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{BEGIN}\n| stale | table |\n{END}\nafter\n", encoding="utf-8")
    update_readme(str(readme), [])
    expected = f"# Title\n\nbefore\n{BEGIN}\n{ledger_markdown([])}\n{END}\nafter\n"
    assert readme.read_text(encoding="utf-8") == expected
    assert ledger_markdown([]).startswith("0 confirmed, 0 refuted, 0 inconclusive; 0 exploratory.")
    update_readme(str(readme), [])  # idempotent
    assert readme.read_text(encoding="utf-8") == expected


@pytest.mark.parametrize("text", ["no markers\n", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{BEGIN}\n{END}\n"])
def test_markers_missing_repeated_or_out_of_order_are_refused(tmp_path, text):
    readme = tmp_path / "README.md"
    readme.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="needs the two lines"):
        update_readme(str(readme), [])
    assert readme.read_text(encoding="utf-8") == text
