"""A plain Keras model and its `stabilize` twin, run alike from one seed and compared bit for bit.

The parity suites (tests/test_keras_parity_model.py, tests/test_keras_parity_outputs.py) port Keras
3.15's own trainer, model and callback tests: each case runs once on the plain model and once on
`stabilize(model, None, nonfinite="propagate")`, and everything they return, the weights and the
optimizer state must be equal. The only difference allowed is the one the wrapper makes on purpose:
the telemetry keys in training logs (a `fit` history, a `train_on_batch` dict), never in `evaluate`.
"""

import re

import keras
import numpy as np

import keras_stability as ks
from keras_stability.model import TELEMETRY

# Where the supported Keras minors (pyproject.toml) behave differently themselves: the twins agree on
# every minor, and a test's hand-written expectation follows the installed release.
KERAS_MINOR = tuple(int(part) for part in keras.__version__.split(".")[:2])
# Keras 3.12: LossScaleOptimizer.build records the variables; before, its `apply(grads)` without
# variables passes no gradients on, and the variables stay as they are.
LOSS_SCALE_APPLIES_WITHOUT_VARIABLES = KERAS_MINOR >= (3, 12)
# Keras 3.14: `train_on_batch` and `test_on_batch` return Python floats; before, NumPy arrays.
ON_BATCH_RETURNS_FLOATS = KERAS_MINOR >= (3, 14)
# Keras 3.15: `train_on_batch` and `test_on_batch` reset the metrics first; before, their metrics
# (the loss's mean included) accumulate over calls until `reset_metrics`.
ON_BATCH_RESETS_METRICS = KERAS_MINOR >= (3, 15)

# Keras 3.14: a `metrics` dict key that names no output raises "Invalid `metrics` ..."; before, "In
# the dict argument `metrics`, key ... does not correspond to any model output".
INVALID_METRICS_KEY = "(?s)Invalid `metrics`.*" if KERAS_MINOR >= (3, 14) else "In the dict argument `metrics`, key '"


def untracked(message):
    """`message` with Keras's tracked lists printed as lists: Keras 3.14 and older (3.10, 3.11, 3.12 and
    3.14 seen) print a functional model's `output_names` in its loss-key errors as `ListWrapper([...])`,
    the wrapper's as `[...]`."""
    return re.sub(r"ListWrapper\((\[[^\]]*\])\)", r"\1", message)


# Keras's three execution modes, as its tests parameterize them.
MODES = {
    "eager": {"run_eagerly": True, "jit_compile": False},
    "graph": {"run_eagerly": False, "jit_compile": False},
    "jit": {"run_eagerly": False, "jit_compile": True},
}


def twins(build, exercise, seed=0):
    """`exercise(model)` on `build()` and on its wrapped twin, each from `seed`; both must agree.

    Returns `(plain, plain_result, wrapped, wrapped_result)`.
    """
    runs = []
    for wrapped in (False, True):
        keras.utils.clear_session()  # the same automatic layer names for both
        keras.utils.set_random_seed(seed)
        model = build()
        if wrapped:
            model = ks.stabilize(model, None, nonfinite="propagate")
        runs.append((model, exercise(model)))
    (plain, expected), (twin, got) = runs
    assert_same(expected, got)
    assert_same_state(plain, twin)
    return plain, expected, twin, got


def assert_same(expected, got, where="result"):
    """Equal structure, types and values; a dict may add exactly the telemetry keys."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not a dict"
        extra = [k for k in got if k not in expected]
        assert not extra or sorted(extra) == sorted(TELEMETRY), f"{where}: keys {list(got)}, Keras {list(expected)}"
        assert [k for k in got if k in expected] == list(expected), f"{where}: key order {list(got)}"
        for key, value in expected.items():
            assert_same(value, got[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert type(got) is type(expected), f"{where}: {type(got).__name__}, Keras {type(expected).__name__}"
        assert len(got) == len(expected), f"{where}: {len(got)} items, Keras {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            assert_same(e, g, f"{where}[{i}]")
    else:
        assert type(got) is type(expected), f"{where}: {type(got).__name__}, Keras {type(expected).__name__}"
        np.testing.assert_array_equal(got, expected, err_msg=where)


def assert_same_state(plain, wrapped):
    """The weights and the (inner) optimizer's variables, value for value."""
    assert len(wrapped.weights) == len(plain.weights)
    for a, b in zip(plain.weights, wrapped.weights):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)
    if getattr(plain, "optimizer", None) is None or not plain.optimizer.built:
        return
    inner = wrapped.optimizer.inner_optimizer
    assert type(inner) is type(plain.optimizer)
    assert len(inner.variables) == len(plain.optimizer.variables)
    for a, b in zip(plain.optimizer.variables, inner.variables):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)
