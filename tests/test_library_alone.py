"""`pip install keras-stability` is the library alone: everything `keras_stability` exports works without the
`suite` extra's packages, and the command says which extra to install.

Here the suite's packages are hidden (`None` in `sys.modules` is how Python marks a module as absent);
.ci/run also runs this file in a virtualenv with only the library installed.
"""

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import tomllib

from keras_stability import cli
from keras_stability.datasets.download import load_tfds
from keras_stability.datasets.idx import DataError

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
HIDDEN = (*cli.SUITE_MODULES, "tensorflow_datasets", "importlib_resources", "pydantic_core", "psycopg", "torch")

# One step of SGD(0.1) on a bias-free Dense(1) from zero weights, the gradient clipped to global norm 1.
# With x = [[1, 2], [3, 4]] and y = [[1], [2]], the mean squared error's gradient at w = 0 is
# 2/2 · Σ (0 − y) x = −(1·[1, 2] + 2·[3, 4]) = [−7, −10], of norm √149; the loss before it is (1 + 4)/2.
LIBRARY_ALONE = """
import json, sys
for name in {hidden!r}:
    sys.modules[name] = None
import keras, numpy as np
import keras_stability as ks
exported = {{name: type(getattr(ks, name)).__name__ for name in ks.__all__}}
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
model.compile(optimizer=ks.StabilizedOptimizer(keras.optimizers.SGD(0.1), ks.clip_by_global_norm(1.0)), loss="mse")
history = model.fit(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0], [2.0]]), batch_size=2, epochs=1, verbose=0)
suite = sorted(name for name in sys.modules if name.partition(".")[0] in {hidden!r} and sys.modules[name] is not None)
print(json.dumps({{"exported": exported, "weights": model.get_weights()[0].ravel().tolist(),
                  "loss": history.history["loss"], "suite": suite}}))
"""


def test_every_export_and_a_fit_work_without_the_suite():
    script = LIBRARY_ALONE.format(hidden=HIDDEN)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert sorted(result["exported"]) == sorted(__import__("keras_stability").__all__)
    assert result["suite"] == []
    np.testing.assert_allclose(result["weights"], 0.1 * np.array([7.0, 10.0]) / np.sqrt(149.0), rtol=1e-6)
    np.testing.assert_allclose(result["loss"], [2.5], rtol=1e-6)


def test_the_command_names_the_extra_to_install(monkeypatch, capsys):
    for name in cli.SUITE_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    assert cli.main(["validate", "experiments/quickstart.yaml"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "keras-stability validate: the command needs the suite's packages, and some are not installed. "
        "Received: missing jinja2, matplotlib, optuna, pandas, pydantic, scipy, sqlalchemy, tensorboard, tqdm, yaml. "
        'Install them with: pip install "keras-stability[suite]"'
    )


def test_mnist_downloads_name_their_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(DataError, match=re.escape('pip install "keras-stability[tfds]"')):
        load_tfds("mnist")


def requirement_name(requirement):
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group().lower().replace("_", "-")


@pytest.mark.skipif(bool(cli.suite_missing()), reason="the suite extra is not installed")
def test_the_commands_suite_modules_are_the_suite_extra():
    distributions = {
        distribution.lower().replace("_", "-")
        for name in cli.SUITE_MODULES
        for distribution in metadata.packages_distributions()[name]
    }
    assert distributions == {requirement_name(r) for r in PROJECT["project"]["optional-dependencies"]["suite"]}


def test_the_library_requires_tensorflow_keras_and_numpy_only():
    assert {requirement_name(r) for r in PROJECT["project"]["dependencies"]} == {"tensorflow", "keras", "numpy"}
