"""Shared runs: the same training in two experiments is trained once and linked into the second."""

import json
import os
import shutil
import textwrap

import pytest
import yaml
from conftest import SMALL_RUN

from keras_stability.config.loading import load_experiment
from keras_stability.experiments.suite import run_experiments
from keras_stability.report.collect import collect
from keras_stability.runs import run_store
from keras_stability.runs.run_identity import resolved_config_text
from keras_stability.runs.run_store import share_finished_run, training_id

pytestmark = pytest.mark.slow  # trains many runs end to end

FIRST = (
    """\
name: first
seeds: [0]
"""
    + SMALL_RUN
    + """\
variants:
  plain: {}
"""
)
# The same training under other names, with another description and seed list, beside a new one.
SECOND = (
    """\
name: second
description: the plain MLP again, and a faster one
seeds: [0]
baseline: reference
"""
    + SMALL_RUN
    + """\
variants:
  reference: {}
  faster: {optimizer: {learning_rate: 0.3}}
"""
)


def experiments(tmp_path):
    paths = []
    for name, text in (("first.yaml", FIRST), ("second.yaml", SECOND)):
        paths.append(tmp_path / name)
        paths[-1].write_text(textwrap.dedent(text))
    return [load_experiment(str(path)) for path in paths]


def test_identity_ignores_names_and_experiment_settings_but_not_what_is_trained(tmp_path):
    first, second = experiments(tmp_path)
    plain = resolved_config_text(first.variants["plain"], "plain", 0)
    assert training_id(plain) == training_id(resolved_config_text(second.variants["reference"], "reference", 0))
    assert training_id(plain) != training_id(resolved_config_text(second.variants["faster"], "faster", 0))
    assert training_id(plain) != training_id(resolved_config_text(first.variants["plain"], "plain", 1))


def test_the_second_experiment_links_the_finished_training(tmp_path):
    results = tmp_path / "results"
    assert run_experiments(experiments(tmp_path), str(results), show_progress=False) == {"done": 2, "shared": 1}
    trained, shared = results / "first" / "plain" / "seed-0", results / "second" / "reference" / "seed-0"
    for name in ("metrics.csv", "steps.csv.gz", "timing.csv"):  # the step log compacted before it is linked
        assert os.readlink(shared / name) == f"../../../first/plain/seed-0/{name}"  # relative: the tree can move
        assert (shared / name).read_bytes() == (trained / name).read_bytes()
    meta, original = (json.loads((d / "meta.json").read_text()) for d in (shared, trained))
    assert meta["shared_from"] == "../../../first/plain/seed-0" and "shared_from" not in original
    assert meta["training_id"] == original["training_id"]
    assert (meta["experiment"], meta["variant"], meta["status"], meta["test"]) == (
        "second",
        "reference",
        "done",
        original["test"],
    )
    assert yaml.safe_load((shared / "config.yaml").read_text())["config"]["description"].startswith("the plain MLP")
    assert os.readlink(results / ".trainings" / original["training_id"]) == "../first/plain/seed-0"
    # The report reads the shared run as the second experiment's, and can tell it apart.
    runs = collect(str(results))["second"].variants["reference"]
    assert [r.meta.get("shared_from") for r in runs] == ["../../../first/plain/seed-0"]
    assert list(runs[0].epoch_values("val_accuracy")) == list(
        collect(str(results))["first"].variants["plain"][0].epoch_values("val_accuracy")
    )
    # Running again trains nothing; the shared run stays shared.
    assert run_experiments(experiments(tmp_path), str(results), show_progress=False) == {"skipped": 2, "shared": 1}


def test_a_shared_run_whose_training_is_gone_trains_itself(tmp_path):
    results = tmp_path / "results"
    first, second = experiments(tmp_path)
    run_experiments([first, second], str(results), show_progress=False)
    trained = results / "first" / "plain" / "seed-0"
    expected = (trained / "metrics.csv").read_bytes()
    shutil.rmtree(trained)
    assert run_experiments([second], str(results), show_progress=False) == {"done": 1, "skipped": 1}
    shared = results / "second" / "reference" / "seed-0"
    assert not (shared / "metrics.csv").is_symlink() and (shared / "metrics.csv").read_bytes() == expected
    assert "shared_from" not in json.loads((shared / "meta.json").read_text())
    # The index now points at the run that trained it here, so the first experiment shares it back.
    assert run_experiments([first], str(results), show_progress=False) == {"shared": 1}


def test_damaged_files_are_left_to_the_runner(tmp_path):
    first, second = experiments(tmp_path)
    results = tmp_path / "results"
    run_experiments([first], str(results), show_progress=False)
    shared = results / "second" / "reference" / "seed-0"
    shared.mkdir(parents=True)
    (shared / "meta.json").write_text("{not json")
    assert not share_finished_run(str(results), second.variants["reference"], "reference", 0, log=print)
    assert (shared / "meta.json").read_text() == "{not json" and not (shared / "metrics.csv").exists()
    (shared / "meta.json").write_text("{}")
    (shared / "config.yaml").write_text("experiment: [unclosed")
    assert not share_finished_run(str(results), second.variants["reference"], "reference", 0, log=print)
    assert (shared / "meta.json").read_text() == "{}"


def test_a_training_from_other_code_is_trained_again_and_takes_the_index(tmp_path):
    results = tmp_path / "results"
    first, second = experiments(tmp_path)
    run_experiments([first], str(results), show_progress=False)
    trained = results / "first" / "plain" / "seed-0"
    meta = json.loads((trained / "meta.json").read_text())
    meta["git"] = {"commit": "0" * 40, "dirty": False}  # as an earlier version's committed run
    (trained / "meta.json").write_text(json.dumps(meta))
    assert run_experiments([second], str(results), show_progress=False) == {"done": 2}
    again = results / "second" / "reference" / "seed-0"
    assert not (again / "metrics.csv").is_symlink()
    assert (again / "metrics.csv").read_bytes() == (trained / "metrics.csv").read_bytes()  # same numbers here
    assert os.readlink(results / ".trainings" / meta["training_id"]) == "../second/reference/seed-0"


def test_a_link_made_by_an_earlier_version_stays_linked(tmp_path):
    results = tmp_path / "results"
    first, second = experiments(tmp_path)
    assert run_experiments([first, second], str(results), show_progress=False) == {"done": 2, "shared": 1}
    trained = results / "first" / "plain" / "seed-0"
    meta = json.loads((trained / "meta.json").read_text())
    meta["git"] = {"commit": "0" * 40, "dirty": False}  # both made by an earlier version
    (trained / "meta.json").write_text(json.dumps(meta))
    assert run_experiments([second], str(results), show_progress=False) == {"shared": 1, "skipped": 1}
    assert (results / "second" / "reference" / "seed-0" / "metrics.csv").is_symlink()


def test_a_tree_copied_through_its_links_still_shares_and_the_index_is_rebuilt(tmp_path):
    original = tmp_path / "results"
    first, second = experiments(tmp_path)
    assert run_experiments([first, second], str(original), show_progress=False) == {"done": 2, "shared": 1}
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)  # follows links: the index entries and shared files become copies
    identity = json.loads((copy / "first" / "plain" / "seed-0" / "meta.json").read_text())["training_id"]
    assert (copy / ".trainings" / identity).is_dir() and not (copy / ".trainings" / identity).is_symlink()
    assert run_experiments([first, second], str(copy), show_progress=False) == {"skipped": 2, "shared": 1}
    assert os.readlink(copy / ".trainings" / identity) == "../first/plain/seed-0"
    assert os.readlink(copy / "second" / "reference" / "seed-0" / "metrics.csv") == (
        "../../../first/plain/seed-0/metrics.csv"
    )
    # An index that is gone, or an entry that became a plain file, is rebuilt from the runs' meta.json.
    for damage in (lambda: shutil.rmtree(copy / ".trainings"), lambda: (copy / ".trainings" / identity).unlink()):
        damage()
        (copy / ".trainings").mkdir(exist_ok=True)
        (copy / ".trainings" / identity).write_text("not a link")
        run_store._SCANS.clear()  # a new process
        assert share_finished_run(str(copy), second.variants["reference"], "reference", 0, log=print)
        assert os.readlink(copy / ".trainings" / identity) == "../first/plain/seed-0"
