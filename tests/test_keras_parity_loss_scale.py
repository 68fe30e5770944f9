"""Keras 3.15's loss_scale_optimizer_test.py (stateful cases) against the wrapper, with the
`LossScaleOptimizer` inside it and around it, and Keras's expected numbers."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_twins import LOSS_SCALE_APPLIES_WITHOUT_VARIABLES

from keras_stability.optimizer import StabilizedOptimizer


def inside(inner, **scaling):
    return StabilizedOptimizer(keras.optimizers.LossScaleOptimizer(inner, **scaling), nonfinite="skip")


def around(inner, **scaling):
    return keras.optimizers.LossScaleOptimizer(StabilizedOptimizer(inner, nonfinite="propagate"), **scaling)


ARRANGEMENTS = {"inside": inside, "around": around}


def variables():
    return [keras.Variable([1.0, 2.0, 3.0, 4.0])]


@pytest.mark.parametrize("arrange", list(ARRANGEMENTS))
@pytest.mark.parametrize("inner_factor", [None, 100.0], ids=["plain", "inner_loss_scale_factor"])
def test_finite_step(arrange, inner_factor):
    # With an inner loss_scale_factor the update must not change (Keras disables the inner factor).
    optimizer = ARRANGEMENTS[arrange](keras.optimizers.SGD(learning_rate=0.5, loss_scale_factor=inner_factor))
    grads = [tf.constant([1.0, 6.0, 7.0, 2.0]) * optimizer.scale_loss(1.0)]
    v = variables()
    optimizer.apply(grads, v)
    np.testing.assert_allclose(v[0], [0.5, -1.0, -0.5, 3.0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arrange", list(ARRANGEMENTS))
def test_apply_with_no_vars(arrange):
    optimizer = ARRANGEMENTS[arrange](keras.optimizers.SGD(learning_rate=0.5))
    v = variables()
    optimizer.build(v)
    optimizer.apply([tf.constant([1.0, 6.0, 7.0, 2.0]) * 2.0**15])
    if arrange == "around" and not LOSS_SCALE_APPLIES_WITHOUT_VARIABLES:  # as around any optimizer
        np.testing.assert_allclose(v[0], [1.0, 2.0, 3.0, 4.0])
        return
    np.testing.assert_allclose(v[0], [0.5, -1.0, -0.5, 3.0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arrange", list(ARRANGEMENTS))
def test_infinite_step(arrange):
    optimizer = ARRANGEMENTS[arrange](keras.optimizers.SGD(learning_rate=0.5))
    v = variables()
    optimizer.apply([tf.constant([np.inf] * 4)], v)
    np.testing.assert_allclose(v[0], [1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("arrange", list(ARRANGEMENTS))
def test_finite_step_with_overwrite(arrange):
    optimizer = ARRANGEMENTS[arrange](keras.optimizers.SGD(learning_rate=0.5))
    v = variables()
    v[0].overwrite_with_gradient = True
    optimizer.apply([tf.constant([1.0, 6.0, 7.0, 2.0])], v)
    np.testing.assert_allclose(v[0], [1.0, 6.0, 7.0, 2.0])  # not unscaled


@pytest.mark.parametrize("arrange", list(ARRANGEMENTS))
def test_downscaling(arrange):
    optimizer = ARRANGEMENTS[arrange](keras.optimizers.SGD(learning_rate=0.5), initial_scale=400.0)
    v = variables()
    optimizer.build(v)
    for _ in range(4):
        optimizer.apply([tf.constant([np.inf] * 4)], v)
    assert float(optimizer.scale_loss(1.0)) == 25.0


@pytest.mark.parametrize("arrange", list(ARRANGEMENTS))
def test_upscaling(arrange):
    optimizer = ARRANGEMENTS[arrange](
        keras.optimizers.SGD(learning_rate=0.5), initial_scale=2.0, dynamic_growth_steps=2
    )
    v = variables()
    optimizer.build(v)
    for _ in range(8):
        optimizer.apply([tf.constant([1.0, 6.0, 7.0, 2.0])], v)
    assert float(optimizer.scale_loss(1.0)) == 32.0


@pytest.mark.parametrize("arrange", list(ARRANGEMENTS))
def test_iterations_update(arrange):
    optimizer = ARRANGEMENTS[arrange](keras.optimizers.SGD(learning_rate=0.5))
    v = variables()
    optimizer.build(v)
    assert int(optimizer.iterations) == 0
    for i in range(3):
        optimizer.apply([tf.constant([1.0, 6.0, 7.0, 2.0])], v)
        assert int(optimizer.iterations) == i + 1
