"""The experiment schema: tagged model/dataset sections, one source for names, seeds, safe names."""

import os
import textwrap
import typing

import pytest

from keras_stability.config.loading import ConfigError, load_experiment
from keras_stability.config.schema import OptimizerConfig, RunConfig
from keras_stability.config.sections import DATASET_SPECS, MODEL_SPECS
from keras_stability.config.transform_specs import TRANSFORM_SPECS
from keras_stability.datasets import DATASETS
from keras_stability.experiments.runner import run_one
from keras_stability.experiments.training import OPTIMIZERS
from keras_stability.experiments.zoo import MODELS
from keras_stability.runs.run_identity import resolved_config_text, what_the_run_trains
from keras_stability.transforms import FACTORIES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(tmp_path, text, name="experiment.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def errors_of(path):
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    return error.value.lines


def test_schema_names_are_the_registries_names():
    assert list(MODEL_SPECS) == list(MODELS)
    assert list(DATASET_SPECS) == list(DATASETS)
    assert list(typing.get_args(OptimizerConfig.model_fields["name"].annotation)) == list(OPTIMIZERS)
    assert list(TRANSFORM_SPECS) == list(FACTORIES)


def test_the_guides_name_every_model_and_dataset():
    with open(os.path.join(ROOT, "docs", "guides", "experiments.md"), encoding="utf-8") as stream:
        table_row = next(line for line in stream.read().splitlines() if line.startswith("| `model` |"))
    with open(os.path.join(ROOT, "docs", "guides", "datasets-and-models.md"), encoding="utf-8") as stream:
        page = stream.read()
    zoo = page.split("\n## Model zoo\n", 1)[1].split("\n## ", 1)[0]
    datasets = page.split("\n## Datasets\n", 1)[1].split("\n## ", 1)[0]
    for name in MODEL_SPECS:
        assert f"`{name}`" in table_row and f"`{name}`" in zoo, name
    for name in DATASET_SPECS:
        assert f"`{name}`" in datasets, name


@pytest.mark.parametrize(
    "section, message",
    [
        (
            "dataset: {name: adding_problem, train_size: 100}\nmodel: {name: rnn}",
            "{path}:1:33: dataset.train_size: unknown key (allowed keys: name, validation_fraction, sequence_length, adding_samples, adding_task)",
        ),
        (
            "model: {name: mlp, units: 3}",
            "{path}:1:20: model.units: unknown key (allowed keys: name, activation, initializer, init_stddev, bias_initializer, bias_value, l1, l2, hidden, dropout)",
        ),
        ("model: {name: deep_mlp, widht: 3}", "{path}:1:25: model.widht: unknown key (did you mean 'width'?)"),
        (
            "model: {name: rnn, dropout: 0.1}\ndataset: {name: adding_problem}",
            "{path}:1:20: model.dropout: unknown key (allowed keys: name, activation, initializer, init_stddev, bias_initializer, bias_value, l1, l2, cell, units, recurrent_initializer, recurrent_stddev, recurrent_nonzero, spectral_radius)",
        ),
        (
            "dataset: {name: mnst}",
            "{path}:1:17: dataset.name: unknown name 'mnst', expected one of mnist_small, mnist, fashion_mnist, adding_problem, zipf_tokens "
            "(did you mean 'mnist'?)",
        ),
        (
            "model: mlp",
            "{path}:1:8: model: a model needs `name:` (one of mlp, deep_mlp, cnn3, cnn4, cnn4_pool4, fmnist_2c2d, rnn, embedding_bag) or "
            "`factory: module:function`. Received: 'mlp'",
        ),
        (
            "seeds: [3, 1, 3]",
            "{path}:1:8: seeds: seeds must be unique: each seed is one run directory. Received: [3, 1, 3] (repeated: [3])",
        ),
        (
            "seeds: [10000000000000000000000000000000000000000]",
            "{path}:1:9: seeds.0: Input should be less than or equal to 4294967295",
        ),
        ("seeds: [-1]", "{path}:1:9: seeds.0: Input should be greater than or equal to 0"),
    ],
)
def test_section_errors(tmp_path, section, message):
    path = write(tmp_path, section + "\nname: x\n")
    assert errors_of(path) == [message.format(path=path)]


def test_largest_seed_is_accepted_and_a_missing_name_is_the_default():
    path_text = "name: x\nseeds: [0, 4294967295]\nmodel: {hidden: [8]}\ndataset: {train_size: 10}\n"
    config = RunConfig.model_validate(__import__("yaml").safe_load(path_text))
    assert config.seeds == [0, 4294967295]
    assert (config.model.name, config.model.hidden, config.dataset.name, config.dataset.train_size) == (
        "mlp",
        [8],
        "mnist_small",
        10,
    )


@pytest.mark.parametrize("name", [".", "..", ".hidden", "a/b", "../x", "", "x" * 101])
def test_names_that_are_not_plain_directories_are_refused(tmp_path, name):
    refused = (
        "a name becomes a directory under results/: up to 100 letters, digits, `_`, `-` and `.`, not starting with `.`."
    )
    for text, where in [
        (f"name: '{name}'\n", "name"),
        (f"name: x\nvariants:\n  '{name}': {{}}\n", "variants."),
        (
            f"name: x\nsearch:\n  study: '{name}'\n  space: {{optimizer.learning_rate: {{type: float, low: 0.1, high: 1}}}}\n",
            "search.study",
        ),
    ]:
        lines = errors_of(write(tmp_path, text))
        assert (
            len(lines) == 1 and f": {where}" in lines[0] and refused in lines[0] and f"Received: {name!r}" in lines[0]
        )
    assert load_experiment(write(tmp_path, "name: x\nvariants: {normalized_0.5: {}, a-b_c: {}}\n")).variants


def test_a_run_of_a_dotted_name_cannot_leave_the_results_root(tmp_path):
    """`run_one` takes a validated `RunConfig`, and no `RunConfig` has a name that leaves the root."""
    with pytest.raises(ValueError, match="a name becomes a directory"):
        RunConfig(name="..")
    (tmp_path / "inside").mkdir()
    path = write(tmp_path / "inside", "name: '..'\nvariants: {'..': {}}\nmodel: {hidden: [4]}\ntraining: {epochs: 1}\n")
    with pytest.raises(ConfigError):
        experiment = load_experiment(path)
        run_one(str(tmp_path / "inside" / "results"), experiment.variants[".."], "..", 0, log=lambda line: None)
    assert sorted(os.listdir(tmp_path)) == ["inside"] and sorted(os.listdir(tmp_path / "inside")) == ["experiment.yaml"]


def test_old_flat_config_is_the_same_run(tmp_path):
    experiment = load_experiment(os.path.join(ROOT, "experiments", "doc002_mlp.yaml"))
    for variant, config in experiment.variants.items():
        # A first-edition run's config.yaml, written by the flat schema (its results left the tree).
        with open(os.path.join(ROOT, "tests", "data", "doc002_mlp", f"{variant}.yaml"), encoding="utf-8") as stream:
            old = stream.read()
        new = resolved_config_text(config, variant, 0)
        assert "units: 64" in old and "units" not in new  # the flat schema's rnn key on an mlp
        assert what_the_run_trains(old) == what_the_run_trains(new)
        changed = new.replace("learning_rate: 0.01", "learning_rate: 0.02")
        assert what_the_run_trains(old) != what_the_run_trains(changed)
    # A key the flat schema's mlp used is still compared.
    widened = old.replace("    - 128\n", "    - 256\n", 1)
    assert what_the_run_trains(widened) != what_the_run_trains(new)


def test_old_idx_config_with_train_size_is_not_the_same_run():
    old = {
        "experiment": "x",
        "variant": "base",
        "seed": 0,
        "config": {
            "name": "x",
            "dataset": {
                "name": "mnist",
                "path": None,
                "validation_fraction": 0.1,
                "train_size": 100,
                "sequence_length": 50,
                "adding_samples": 2000,
            },
        },
    }
    new = resolved_config_text(RunConfig(name="x", dataset=DATASET_SPECS["mnist"](train_size=100)), "base", 0)
    dump = __import__("yaml").safe_dump(old, sort_keys=False)
    assert what_the_run_trains(dump) != what_the_run_trains(new)
    assert what_the_run_trains(dump.replace("train_size: 100", "train_size: null")) == what_the_run_trains(
        resolved_config_text(RunConfig(name="x", dataset=DATASET_SPECS["mnist"]()), "base", 0)
    )
