"""The private Keras API the package relies on is still there, in the installed Keras.

keras-stability drives the wrapped optimizer's own steps (`inner_step`) and reuses `fit`'s set-up
(`epoch_loop`, `model`) through private attributes. Keras may move them in any release: this test
names every one, so an upgrade fails here, with the version, instead of deep inside a training run.

Policy for Keras releases: pyproject.toml accepts every minor from 3.10 to the newest tested
(`keras>=3.10,<3.16`), and .ci/run runs this file and the parity suite (tests/test_keras_parity_*.py,
test_optimizer.py, test_model.py) once per minor. Raising the upper bound needs them to pass on the
new release; a private name that moved is followed in the module that uses it, never patched around.
"""

import re
from pathlib import Path

import keras
import pytest
import tomllib
from keras.src.backend.tensorflow.optimizer import TFOptimizer

PACKAGE = Path(__file__).resolve().parents[1] / "keras_stability"

# Each private name, where Keras defines it, and the package module that uses it.
OPTIMIZER_METHODS = [
    "_filter_empty_gradients",
    "_overwrite_variable_with_gradient",
    "_overwrite_variables_directly_with_gradients",
    "_backend_reset_gradient_accumulators",
    "_update_model_variables_moving_average",
    "_overwrite_model_variables_with_average_value",
    "_apply_weight_decay",
    "_use_weight_decay",
    "_backend_update_step",
    "_distributed_tf_update_step",
    "_get_variable_index",
]
OPTIMIZER_ATTRIBUTES = [
    "_iterations",
    "_accumulated_gradients",
    "_trainable_variables",
    "_variables",
    "_model_variables_moving_average",
    "_learning_rate",
]
ADAM_ATTRIBUTES = ["_velocities"]  # read by `sharpness.adam_preconditioner`
MODEL_METHODS = ["_maybe_symbolic_build", "_compute_loss", "_flatten_metrics_in_order"]
MODEL_ATTRIBUTES = ["_loss_tracker", "_compile_loss", "_metrics"]
CHECKED = set(OPTIMIZER_METHODS + OPTIMIZER_ATTRIBUTES + ADAM_ATTRIBUTES + MODEL_METHODS + MODEL_ATTRIBUTES)


def moved(name):
    return (
        f"Keras {keras.__version__} has no `{name}`, which keras_stability uses (grep the package for "
        f"`.{name}`). Follow Keras's change there, or install the tested Keras (see pyproject.toml)."
    )


@pytest.mark.parametrize("name", OPTIMIZER_METHODS)
def test_optimizer_private_methods(name):
    assert callable(getattr(TFOptimizer, name, None)), moved(name)


@pytest.mark.parametrize("name", MODEL_METHODS)
def test_model_private_methods(name):
    assert callable(getattr(keras.Model, name, None)), moved(name)


def test_private_attributes_of_a_built_optimizer_and_a_compiled_model():
    variable = keras.Variable([1.0])
    optimizer = keras.optimizers.SGD(0.1, use_ema=True, gradient_accumulation_steps=2)
    optimizer.build([variable])
    for name in OPTIMIZER_ATTRIBUTES:
        assert hasattr(optimizer, name), moved(name)
    adam = keras.optimizers.Adam()
    adam.build([variable])
    for name in ADAM_ATTRIBUTES:
        assert hasattr(adam, name), moved(name)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    for name in MODEL_ATTRIBUTES:
        assert hasattr(model, name), moved(name)


def test_every_private_keras_name_the_package_uses_is_checked():
    # Attributes read on objects other than `self` (the inner optimizer, the model); the package's own
    # private helpers and its own attributes are excluded by being defined in the package.
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    defined = set(re.findall(r"def (_[a-z]\w*)", source)) | set(re.findall(r"self\.(_[a-z]\w*) =", source))
    namedtuple_api = {"_asdict", "_fields", "_make", "_replace"}  # documented public methods, not Keras's
    used = set(re.findall(r"(?<!self)\.(_[a-z]\w*)", source)) - defined - namedtuple_api
    assert used <= CHECKED, f"private names used but not guarded here: {sorted(used - CHECKED)}"


def test_installed_keras_is_within_the_tested_range():
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    requirement = next(r for r in project["project"]["dependencies"] if r.startswith("keras"))
    lower, upper = re.fullmatch(r"keras>=([\d.]+),<([\d.]+)", requirement.replace(" ", "")).groups()
    version = tuple(int(p) for p in keras.__version__.split(".")[:2])
    assert tuple(int(p) for p in lower.split(".")[:2]) <= version < tuple(int(p) for p in upper.split(".")[:2]), (
        f"Keras {keras.__version__} is outside the range keras_stability is tested with ({requirement}); "
        "run tests/test_private_api.py and tests/test_keras_parity_*.py before widening it."
    )
