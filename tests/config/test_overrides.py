"""Variants over a base file: a variant or `--set` that names another model or dataset replaces the
section (whose keys belong to the old member); otherwise mappings merge and lists replace."""

import pytest

from keras_stability.config import overrides
from keras_stability.config.loading import load_experiment


def write(tmp_path, text, name="experiment.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


SWITCHING = """\
name: switching
dataset:
  name: mnist_small
  train_size: 500
model:
  name: mlp
  hidden: [16]
variants:
  wider:
    model: {hidden: [32], dropout: 0.25}
  deep:
    model: {name: deep_mlp, depth: 3}
  adding:
    dataset: {name: adding_problem, sequence_length: 20}
    model: {name: rnn, units: 8}
"""


def test_variant_naming_another_model_or_dataset_replaces_the_section(tmp_path):
    experiment = load_experiment(write(tmp_path, SWITCHING))
    # Same name: the override merges into the base section.
    assert experiment.sources["wider"]["model"] == {"name": "mlp", "hidden": [32], "dropout": 0.25}
    # Another name: the base's `hidden` and `train_size` belong to mlp and mnist_small, and are dropped.
    assert experiment.sources["deep"]["model"] == {"name": "deep_mlp", "depth": 3}
    assert experiment.sources["deep"]["dataset"] == {"name": "mnist_small", "train_size": 500}
    assert experiment.sources["adding"]["dataset"] == {"name": "adding_problem", "sequence_length": 20}
    assert experiment.sources["adding"]["model"] == {"name": "rnn", "units": 8}
    deep, adding = experiment.variants["deep"], experiment.variants["adding"]
    assert (deep.model.name, deep.model.depth, deep.model.width) == ("deep_mlp", 3, 128)
    dataset = adding.dataset
    assert (dataset.name, dataset.sequence_length, dataset.adding_samples) == ("adding_problem", 20, 2000)
    assert (adding.model.name, adding.model.units) == ("rnn", 8)
    assert experiment.variants["wider"].model.hidden == [32]
    # The section keeps its place among the keys.
    assert list(experiment.sources["deep"]) == list(experiment.sources["wider"])


def test_set_naming_another_model_replaces_the_section(tmp_path):
    path = write(tmp_path, SWITCHING.split("  adding:")[0])
    # --set applies to every variant last: `wider`'s mlp keys are dropped with the switch, then depth is set.
    experiment = load_experiment(path, ["model.name=deep_mlp", "model.depth=2"])
    assert experiment.sources["wider"]["model"] == {"name": "deep_mlp", "depth": 2}
    assert (experiment.variants["wider"].model.name, experiment.variants["wider"].model.depth) == ("deep_mlp", 2)
    # The same name merges: the variant keeps its own keys.
    assert load_experiment(path, ["model.name=mlp"]).sources["wider"]["model"] == {
        "name": "mlp",
        "hidden": [32],
        "dropout": 0.25,
    }


@pytest.mark.parametrize(
    "base, override, expected",
    [
        # No `name`: the section is the default member (mlp), so naming mlp merges and naming deep_mlp replaces.
        ({"hidden": [16]}, {"name": "mlp", "dropout": 0.5}, {"hidden": [16], "name": "mlp", "dropout": 0.5}),
        ({"hidden": [16]}, {"name": "deep_mlp"}, {"name": "deep_mlp"}),
        # `factory` added or removed replaces; another factory or other args merge (same member).
        ({"name": "mlp", "hidden": [16]}, {"factory": "m:build"}, {"factory": "m:build"}),
        ({"factory": "m:build", "args": {"width": 4}}, {"name": "mlp"}, {"name": "mlp"}),
        (
            {"factory": "m:build", "args": {"width": 4}},
            {"args": {"depth": 2}},
            {"factory": "m:build", "args": {"width": 4, "depth": 2}},
        ),
        (
            {"factory": "m:build", "args": {"width": 4}},
            {"factory": "m:other"},
            {"factory": "m:other", "args": {"width": 4}},
        ),
        # A section replaced by null replaces, as before.
        ({"name": "mlp"}, None, None),
    ],
)
def test_merge_replaces_a_model_section_that_selects_another_member(base, override, expected):
    merged = overrides.merge({"model": base, "seeds": [0]}, {"model": override})
    assert merged == {"model": expected, "seeds": [0]}


def test_merge_replaces_lists_and_merges_other_mappings():
    base = {
        "stabilizer": {
            "transforms": [{"name": "clip_by_value", "limit": 1.0}, {"name": "clip_by_global_norm", "max_norm": 1.0}],
            "nonfinite": "skip",
        },
        "optimizer": {"name": "sgd", "learning_rate": 0.1},
        "dataset": {"name": "mnist", "path": "data"},
    }
    override = {
        "stabilizer": {"transforms": [{"name": "zclip"}]},
        "optimizer": {"momentum": 0.9},
        "dataset": {"name": "fashion_mnist"},
    }
    assert overrides.merge(base, override) == {
        "stabilizer": {"transforms": [{"name": "zclip"}], "nonfinite": "skip"},
        "optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
        "dataset": {"name": "fashion_mnist"},
    }
    # A `name` key anywhere else is an ordinary setting: the optimizer merges.
    assert overrides.merge(base, {"optimizer": {"name": "adam"}})["optimizer"] == {"name": "adam", "learning_rate": 0.1}
    assert base["stabilizer"]["transforms"][1] == {"name": "clip_by_global_norm", "max_norm": 1.0}  # not mutated
