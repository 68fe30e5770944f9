"""What the README and the documentation site say is what the code does: the README's example trains as
Keras's own clipping does, its table names every transform, every command, option, module and file the
pages name exists, the Python guide's session prints what it shows, and the findings page holds the
blocks `report --findings` writes."""

import doctest
import glob
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pandas as pd

from keras_stability.report.findings import markers
from keras_stability.transforms import FACTORIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as stream:
        return stream.read()


def pages():
    """README.md and every Markdown page of the site, by path relative to the repository."""
    found = ["README.md"]
    for directory, _, names in os.walk(os.path.join(ROOT, "docs")):
        found += [os.path.relpath(os.path.join(directory, name), ROOT) for name in names if name.endswith(".md")]
    return sorted(found)


def snippet(text, name):
    """The text between the README's `--8<-- [start:name]` and `[end:name]` lines (the site includes it)."""
    return text.split(f"<!-- --8<-- [start:{name}] -->\n", 1)[1].split(f"<!-- --8<-- [end:{name}] -->", 1)[0]


def test_the_readme_example_trains_as_keras_global_clipnorm_does(capsys):
    code = snippet(read("README.md"), "example").removeprefix("```python\n").removesuffix("```\n")
    wrapping = code.index("# Wrap the model")
    data_and_model, wrapped = code[:wrapping], code[wrapping:]
    namespace = {}
    exec(data_and_model, namespace)
    initial = namespace["inner"].get_weights()
    exec(wrapped, namespace)
    history = namespace["history"].history
    assert history["nonfinite_steps"] == [0, 0]
    assert all(0.0 < rate <= 1.0 for rate in history["clip_rate"])  # its norms start above 1: it clips
    assert capsys.readouterr().out.count("[") == 3  # the three telemetry lists it prints

    # Keras's own global_clipnorm from the same weights, on the same batches, ends at the same weights.
    twin = keras.models.clone_model(namespace["inner"])
    twin.set_weights(initial)
    twin.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, global_clipnorm=1.0), loss=namespace["loss"])
    twin.fit(namespace["x"], namespace["y"], batch_size=100, epochs=2, shuffle=False, verbose=0)
    for ours, keras_own in zip(namespace["inner"].get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(ours, keras_own, rtol=1e-5, atol=1e-6)
    assert isinstance(namespace["optimizer"].inner_optimizer, keras.optimizers.SGD)


def test_the_readme_stays_short_and_its_table_names_every_transform():
    readme = read("README.md")
    assert len(readme.splitlines()) <= 200
    table = snippet(readme, "transforms")
    for name in FACTORIES:
        assert f"| `{name}(" in table, name


def test_the_readme_holds_no_generated_block_and_the_findings_page_holds_each_once():
    readme, findings = read("README.md"), read("docs", "findings.md")
    for block in ("suite", "ledger", "published"):
        begin, end = markers(block)
        assert begin not in readme and end not in readme
        assert findings.count(begin) == 1 and findings.count(end) == 1
        assert findings.index(begin) < findings.index(end)
    assert "--findings docs/findings.md" in read("experiments", "reproduce.sh")


def test_every_command_and_option_the_pages_name_exists():
    helps = {}
    for command in ["run", "validate", "search", "sweep", "report", "verify", "compact", "list", "demo"]:
        completed = subprocess.run(
            [sys.executable, "-m", "keras_stability.cli", command, "--help"], capture_output=True, text=True
        )
        helps[command] = completed.stdout
    named = 0
    for page in pages():
        for line in read(page).splitlines():
            for command, rest in re.findall(r"(?:^|`|/|\$ )keras-stability ([a-z]+)\b([^`|&;]*)", line):
                assert command in helps, f"{page}: keras-stability {command}: no such command"
                for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-o)\b", rest):
                    assert option in helps[command], f"{page}: keras-stability {command} {option}: no such option"
                    named += 1
    assert named > 10  # the pages do name options: the pattern still finds them


def test_the_layout_page_names_every_module_and_no_other():
    layout = read("docs", "layout.md")
    modules = set()
    for _, _, names in os.walk(os.path.join(ROOT, "keras_stability")):
        modules |= {name for name in names if name.endswith(".py") and name not in ("__init__.py", "__main__.py")}
    named = set(re.findall(r"`(\w+\.py)`", layout)) - {"__init__.py", "reproduce.sh"}
    others = set(os.listdir(os.path.join(ROOT, "benchmarks"))) | set(os.listdir(os.path.join(ROOT, "tests")))
    assert modules - named == set()  # every module is on the page
    assert named - modules - others == set()  # and every name on it is a module, a benchmark or a test


def test_the_python_guide_session_gives_what_it_shows(monkeypatch):
    blocks = re.findall(r"```python\n(>>> .*?)```", read("docs", "guides", "python.md"), re.S)
    test = doctest.DocTestParser().get_doctest("".join(blocks), {}, "python.md", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    monkeypatch.chdir(ROOT)  # the session reads the committed results/ and reports/
    with pd.option_context("display.width", 100, "display.max_columns", 20):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


def test_every_file_the_pages_name_exists():
    named = 0
    for page in pages():
        for path in set(
            re.findall(
                r"(?<![\w/.])((?:keras_stability|tests|benchmarks|experiments)/[\w/{},*.-]*\.(?:py|yaml|sh))(?!:\d)",
                read(page),
            )
        ):
            head, _, rest = path.partition("{")
            alternatives, _, tail = rest.partition("}")
            for expanded in [head + choice + tail for choice in alternatives.split(",")] if rest else [path]:
                assert glob.glob(os.path.join(ROOT, expanded)), f"{page}: {expanded} does not exist"
                named += 1
    assert named > 10


def test_the_api_page_documents_every_name_the_package_exports():
    import keras_stability

    documented = set(re.findall(r"^::: [\w.]+\.(\w+)$", read("docs", "api", "library.md"), re.M))
    renamed = keras_stability._RENAMED  # exported under another name than the module's
    assert {renamed.get(name, name) for name in keras_stability.__all__} == documented
