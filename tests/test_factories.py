"""Your own model and data: factories in modules outside the package, entry points, their errors."""

import hashlib
import json
import sys
import textwrap

import pytest

from keras_stability.config.loading import ConfigError, load_experiment
from keras_stability.config.sections import known_names
from keras_stability.experiments.runner import run_one

# The zoo's mlp with hidden [16], written outside the package: with the same seed it must train to
# the same bytes as the zoo's model, which makes the zoo run the factory run's reference.
MODELS = """
import keras

SEEDS = []


def build(input_shape, num_classes, seed, width=16):
    SEEDS.append(seed)
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(width, activation="relu"), keras.layers.Dense(num_classes)])


def not_a_model(input_shape, num_classes, seed):
    return {"layers": 2}


WIDTH = 16
"""
# mnist_small's own splits, returned as arrays or as a batched tf.data pipeline.
DATA = """
import tensorflow as tf

from keras_stability.datasets import load_dataset
from keras_stability.config.sections import MnistSmallConfig


def load(seed, pipeline=False):
    s = load_dataset(MnistSmallConfig(), seed)
    pairs = {"train": (s.x_train, s.y_train), "validation": (s.x_val, s.y_val), "test": (s.x_test, s.y_test)}
    if pipeline:
        pairs = {k: tf.data.Dataset.from_tensor_slices(v).batch(333) for k, v in pairs.items()}
    return pairs


def endless(seed):
    return {k: tf.data.Dataset.from_tensors(([0.0], 0)).repeat() for k in ("train", "validation", "test")}
"""
BASE = """\
name: own
seeds: [3]
optimizer: {name: sgd, learning_rate: 0.1}
training: {epochs: 2, batch_size: 50}
"""


@pytest.fixture
def own_modules(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(MODELS)
    (tmp_path / "mydata.py").write_text(DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("mymodels", "mydata", "fakepkg"):
        sys.modules.pop(name, None)


def experiment(directory, sections, name="experiment.yaml"):
    path = directory / name
    path.write_text(BASE + textwrap.dedent(sections))
    return load_experiment(str(path))


def run(directory, config, results="results"):
    status = run_one(str(directory / results), config, "base", 3, log=lambda line: None)
    run_directory = directory / results / config.name / "base" / "seed-3"
    return status, (run_directory / "metrics.csv").read_text(), json.loads((run_directory / "meta.json").read_text())


def test_factory_model_and_data_train_as_the_zoo_does(own_modules):
    zoo = experiment(own_modules, "model: {name: mlp, hidden: [16]}\ndataset: {name: mnist_small, train_size: 300}\n")
    own = experiment(
        own_modules,
        """\
        model: {factory: "mymodels:build", args: {width: 16}}
        dataset: {factory: "mydata:load", train_size: 300}
        """,
        "own.yaml",
    )
    piped = experiment(
        own_modules,
        """\
        model: {factory: "mymodels:build"}
        dataset: {factory: "mydata:load", args: {pipeline: true}, train_size: 300}
        """,
        "piped.yaml",
    )
    reference = run(own_modules, zoo.variants["base"], "zoo")
    first = run(own_modules, own.variants["base"], "first")
    again = run(own_modules, own.variants["base"], "again")
    through_pipeline = run(own_modules, piped.variants["base"], "piped")
    assert reference[0] == first[0] == again[0] == through_pipeline[0] == "done"
    assert first[1] == again[1] == through_pipeline[1] == reference[1]  # byte-identical metrics.csv
    val_accuracy = [float(row.split(",")[4]) for row in reference[1].splitlines()[1:]]
    assert len(val_accuracy) == 2 and val_accuracy[1] > val_accuracy[0] and val_accuracy[1] > 0.3  # chance: 0.1
    assert sys.modules["mymodels"].SEEDS == [3, 3, 3]  # the run seed, each time
    provenance = first[2]["model_factory"]
    assert provenance["factory"] == "mymodels:build" and provenance["module"] == "mymodels"
    assert provenance["module_sha256"] == hashlib.sha256((own_modules / "mymodels.py").read_bytes()).hexdigest()
    assert (provenance["package"], provenance["version"], provenance["entry_point"]) == (None, None, None)
    assert (
        first[2]["dataset_factory"]["factory"] == "mydata:load" and first[2]["dataset_source"] == "factory mydata:load"
    )
    assert "model_factory" not in reference[2] and "dataset_factory" not in reference[2]


@pytest.mark.parametrize(
    "factory, message",
    [
        (
            "nomodule:build",
            "cannot import module 'nomodule': ModuleNotFoundError: No module named 'nomodule'. "
            "Received: 'nomodule:build'; put the module's directory on PYTHONPATH or install its package",
        ),
        ("mymodels:biuld", "module 'mymodels' has no attribute 'biuld'. Received: 'mymodels:biuld'"),
        ("mymodels:WIDTH", "'mymodels:WIDTH' is not callable. Received: int 16"),
        ("mymodels.build", "a factory is `module:function`, e.g. mypkg.models:build. Received: 'mymodels.build'"),
    ],
)
def test_a_bad_factory_is_one_line_at_load_time(own_modules, factory, message):
    path = own_modules / "bad.yaml"
    path.write_text(BASE + f'model: {{factory: "{factory}"}}\n')
    with pytest.raises(ConfigError) as error:
        load_experiment(str(path))
    assert error.value.lines == [f"{path}:5:18: model.factory: {message}"]


def test_wrong_return_types_fail_the_run_with_what_was_received(own_modules):
    model = experiment(own_modules, 'model: {factory: "mymodels:not_a_model"}\n', "model.yaml")
    status = run_one(str(own_modules / "r"), model.variants["base"], "base", 3, log=lambda line: None)
    meta = json.loads((own_modules / "r" / "own" / "base" / "seed-3" / "meta.json").read_text())
    assert status == "failed"
    assert meta["error"] == (
        "TypeError: The model factory 'mymodels:not_a_model' must return a keras.Model. "
        "Received: dict; return the model it builds (uncompiled)"
    )
    data = experiment(
        own_modules, 'dataset: {factory: "mydata:endless"}\nmodel: {factory: "mymodels:build"}\n', "data.yaml"
    )
    assert run_one(str(own_modules / "d"), data.variants["base"], "base", 3, log=lambda line: None) == "failed"
    meta = json.loads((own_modules / "d" / "own" / "base" / "seed-3" / "meta.json").read_text())
    assert meta["error"] == (
        "TypeError: mydata:endless 'train' is an infinite tf.data.Dataset. Received: cardinality -1; "
        "end it (e.g. `.take(n)`): it is read once into memory"
    )


def test_entry_points_register_names(own_modules):
    (own_modules / "fakepkg.py").write_text("from mymodels import build\n")
    info = own_modules / "fakepkg-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[keras_stability.models]\ntiny_mlp = fakepkg:build\n")
    assert known_names("model")[-1] == "tiny_mlp"
    registered = experiment(own_modules, "model: {name: tiny_mlp, args: {width: 16}}\n", "registered.yaml")
    status, _, meta = run(own_modules, registered.variants["base"], "registered")
    assert status == "done"
    assert meta["model_factory"]["entry_point"] == "tiny_mlp"
    assert (meta["model_factory"]["package"], meta["model_factory"]["version"]) == ("fakepkg", "1.2.3")
    path = own_modules / "misspelt.yaml"  # its args are checked against the registered function's signature
    path.write_text(BASE + "model: {name: tiny_mlp, args: {widht: 16}}\n")
    with pytest.raises(ConfigError) as error:
        load_experiment(str(path))
    assert error.value.lines[0].startswith(
        f"{path}:5:31: model.args: the arguments do not fit fakepkg:build(input_shape, num_classes, seed, width=16): "
        "got an unexpected keyword argument 'widht'"
    )
    path = own_modules / "typo.yaml"
    path.write_text(BASE + "model: {name: tiny_mpl}\n")
    with pytest.raises(ConfigError) as error:
        load_experiment(str(path))
    assert error.value.lines == [
        f"{path}:5:15: model.name: unknown name 'tiny_mpl', expected one of "
        "mlp, deep_mlp, cnn3, cnn4, cnn4_pool4, fmnist_2c2d, rnn, embedding_bag, tiny_mlp (did you mean 'tiny_mlp'?)"
    ]
