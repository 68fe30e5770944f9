"""Keras 3.15's own optimizer tests (optimizer_test.py, sgd_test.py, adam_test.py) re-run against
`StabilizedOptimizer(inner, transform, nonfinite="propagate")`, with Keras's expected numbers.

Each case is Keras's, with `optimizer` replaced by the wrapper; Keras's clip arguments become the
equivalent transforms. Where Keras reads a private attribute (`_iterations`, `_accumulated_gradients`,
`_model_variables_moving_average`), the test reads it on the wrapped optimizer, which owns that state.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stability as ks
from keras_stability.optimizer import StabilizedOptimizer

# Every built-in optimizer Keras parameterizes its accumulation test over.
BUILT_INS = ["adam", "sgd", "adamw", "adagrad", "rmsprop", "adadelta", "adamax", "lion", "nadam", "ftrl", "adafactor"]


def wrap(inner, transform=None):
    return StabilizedOptimizer(inner, transform, nonfinite="propagate")


def constant(values):
    return tf.constant(values, tf.float32)


def test_iterations_counter():
    v = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    grads = constant([[1.0, 1.0], [1.0, 1.0]])
    optimizer = wrap(keras.optimizers.Adam(learning_rate=1.0))
    assert int(optimizer.iterations) == 0
    optimizer.apply_gradients([(grads, v)])
    assert int(optimizer.iterations) == 1
    optimizer.apply_gradients([(grads, v)])
    assert int(optimizer.iterations) == 2


def test_empty_gradients():
    v = keras.Variable([[3.0, 4.0], [5.0, 6.0]])
    with pytest.raises(ValueError, match=re.escape("No gradients provided for any variable.")):
        wrap(keras.optimizers.SGD(learning_rate=1.0)).apply_gradients([(None, v)])
    v2 = keras.Variable([[3.0, 4.0], [5.0, 6.0]])
    optimizer = wrap(keras.optimizers.SGD(learning_rate=1.0))
    with pytest.warns(UserWarning, match="Gradients do not exist"):
        optimizer.apply_gradients([(None, v), (constant([[1.0, 1.0], [1.0, 1.0]]), v2)])
    np.testing.assert_allclose(v, [[3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_allclose(v2, [[2.0, 3.0], [4.0, 5.0]])
    optimizer.apply([])  # no gradients at all: a no-op, as in Keras's Optimizer.apply
    np.testing.assert_allclose(v2, [[2.0, 3.0], [4.0, 5.0]])
    assert int(optimizer.iterations) == 1


@pytest.mark.parametrize(
    "transform, expected",
    [
        (ks.clip_by_norm(1.0), [2**0.5 / 2, 2**0.5 / 2]),  # Keras: clipnorm=1
        (ks.clip_by_value(1.0), [1.0, 1.0]),  # Keras: clipvalue=1
        (ks.clip_by_global_norm(1.0), [2**0.5 / 2, 2**0.5 / 2]),  # Keras: global_clipnorm=1
    ],
    ids=["clipnorm", "clipvalue", "global_clipnorm"],
)
@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_clipping_matches_keras_clip_arguments(transform, expected, inner):
    # Keras asserts `_clip_gradients([[100, 100]])`; the wrapper's clipped gradient, read through
    # SGD(1) as `-Δw`, and the same gradient fed to the plain Keras optimizer with the clip argument.
    v = keras.Variable([0.0, 0.0])
    wrap(keras.optimizers.SGD(1.0), transform).apply([constant([100.0, 100.0])], [v])
    np.testing.assert_allclose(-v.numpy(), expected, rtol=1e-6)
    argument = {"ClipByNorm": "clipnorm", "ClipByValue": "clipvalue", "ClipByGlobalNorm": "global_clipnorm"}
    keras_variable, wrapped_variable = keras.Variable([0.5, -1.0]), keras.Variable([0.5, -1.0])
    keras.optimizers.get({"class_name": inner, "config": {argument[type(transform).__name__]: 1.0}}).apply(
        [constant([100.0, 100.0])], [keras_variable]
    )
    wrap(keras.optimizers.get(inner), type(transform).from_config(transform.get_config())).apply(
        [constant([100.0, 100.0])], [wrapped_variable]
    )
    np.testing.assert_allclose(wrapped_variable, keras_variable, rtol=1e-6)


def test_ema():
    v = keras.Variable([[3.0, 4.0], [5.0, 6.0]])
    grads = constant([[1.0, 1.0], [1.0, 1.0]])
    optimizer = wrap(keras.optimizers.SGD(learning_rate=1.0, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3))
    optimizer.apply_gradients([(grads, v)])

    def average():
        return optimizer.core_optimizer._model_variables_moving_average[0]

    np.testing.assert_allclose(v, [[2.0, 3.0], [4.0, 5.0]])
    np.testing.assert_allclose(average(), [[2.0, 3.0], [4.0, 5.0]])  # initialized after first step
    optimizer.apply_gradients([(grads, v)])
    np.testing.assert_allclose(v, [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(average(), [[1.9, 2.9], [3.9, 4.9]], rtol=1e-6)
    optimizer.apply_gradients([(grads, v)])
    # Variables were overwritten with EMA
    np.testing.assert_allclose(v, [[1.71, 2.71], [3.71, 4.71]], rtol=1e-6)
    np.testing.assert_allclose(average(), [[1.71, 2.71], [3.71, 4.71]], rtol=1e-6)


def test_ema_with_model_fit():
    optimizer = wrap(keras.optimizers.SGD(learning_rate=0.1, use_ema=True, ema_momentum=0.9))
    model = keras.Sequential([keras.layers.Dense(2, kernel_initializer="ones", use_bias=False)])
    model.compile(loss="mse", optimizer=optimizer, run_eagerly=True)
    model.fit(np.ones((1, 1), "float32"), np.zeros((1, 1), "float32"), batch_size=1, epochs=2, verbose=0)
    np.testing.assert_allclose(optimizer.core_optimizer._model_variables_moving_average[0], [[0.891, 0.891]], atol=1e-5)
    np.testing.assert_allclose(model.trainable_variables[0], [[0.891, 0.891]], atol=1e-5)


def test_constraints_are_applied():
    v = keras.Variable(np.random.default_rng(0).random((2, 2)) - 1.0)
    v.constraint = keras.constraints.NonNeg()
    wrap(keras.optimizers.SGD(learning_rate=0.0001)).apply_gradients([(tf.zeros((2, 2)), v)])
    assert np.min(v) == 0.0


def test_static_loss_scaling():
    v = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    grads = constant([[1.0, 2.0], [3.0, 4.0]]) * 1024.0
    optimizer = wrap(keras.optimizers.SGD(learning_rate=1.0, loss_scale_factor=1024.0))
    optimizer.apply_gradients([(grads, v)])
    assert float(optimizer.scale_loss(1.0)) == 1024.0
    np.testing.assert_allclose(v, [[0.0, 0.0], [0.0, 0.0]])


def test_set_weights():
    x = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    optimizer_1 = wrap(keras.optimizers.Adam())
    optimizer_1.apply_gradients(zip([constant([[1.0, 2.0], [3.0, 4.0]])], [x]))
    optimizer_2 = wrap(keras.optimizers.Adam())
    with pytest.raises(ValueError, match="You are calling"):
        optimizer_2.set_weights(optimizer_1.variables)
    optimizer_2.build([x])
    optimizer_2.set_weights([v.numpy() for v in optimizer_1.variables])
    # Every variable, the inner optimizer's iterations and Adam's moments included.
    assert int(optimizer_2.iterations) == 1
    for a, b in zip(optimizer_1.variables, optimizer_2.variables):
        np.testing.assert_array_equal(a, b)


def test_gradient_accumulation():
    v = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    grads = constant([[1.0, 1.0], [1.0, 1.0]])
    optimizer = wrap(keras.optimizers.SGD(learning_rate=1.0, gradient_accumulation_steps=3))
    core = optimizer.core_optimizer
    assert core.gradient_accumulation_steps == 3
    expected = [  # (v, accumulator, _iterations, iterations) after each of Keras's four iterations
        ([[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]], 1, 0),
        ([[1.0, 2.0], [3.0, 4.0]], [[2.0, 2.0], [2.0, 2.0]], 2, 0),
        ([[0.0, 1.0], [2.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]], 3, 1),
        ([[0.0, 1.0], [2.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]], 4, 1),
    ]
    for weights, accumulator, micro_steps, iterations in expected:
        optimizer.apply_gradients([(grads, v)])
        np.testing.assert_allclose(v, weights)
        np.testing.assert_allclose(core._accumulated_gradients[0], accumulator)
        assert int(core._iterations) == micro_steps
        assert int(optimizer.iterations) == iterations


def test_callable_learning_rate():
    v = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    optimizer = wrap(keras.optimizers.SGD(learning_rate=lambda: 0.1))
    assert int(optimizer.iterations) == 0
    optimizer.apply_gradients([(constant([[1.0, 1.0], [1.0, 1.0]]), v)])
    np.testing.assert_allclose(v, [[0.9, 1.9], [2.9, 3.9]], rtol=1e-6)
    assert int(optimizer.iterations) == 1


@pytest.mark.parametrize("transform", [None, ks.clip_by_global_norm(1.0)], ids=["none", "clip_by_global_norm"])
def test_overwrite_with_gradient(transform):
    v = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    v.overwrite_with_gradient = True
    v2 = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    ones = constant([[1.0, 1.0], [1.0, 1.0]])
    optimizer = wrap(keras.optimizers.SGD(learning_rate=1.0), transform)
    stats = optimizer.apply_with_stats([ones, ones], [v, v2])
    # `v` is overwritten by its gradient, untransformed; `v2` is updated normally. Its gradient is
    # the only one in the global norm (2, not 2.83), so clipping at 1 halves it.
    np.testing.assert_allclose(v, [[1.0, 1.0], [1.0, 1.0]])
    step = 1.0 if transform is None else 0.5
    np.testing.assert_allclose(v2, np.array([[1.0, 2.0], [3.0, 4.0]]) - step, rtol=1e-6)
    np.testing.assert_allclose(stats.grad_norm, 2.0, rtol=1e-6)


def test_overwrite_with_gradient_with_gradient_accumulation():
    v = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    v.overwrite_with_gradient = True
    v2 = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    ones, twos = constant([[1.0, 1.0], [1.0, 1.0]]), constant([[2.0, 2.0], [2.0, 2.0]])
    optimizer = wrap(keras.optimizers.SGD(learning_rate=1.0, gradient_accumulation_steps=2))
    core = optimizer.core_optimizer
    expected = [  # gradient, _iterations, iterations, v, v2, both accumulators (Keras's numbers)
        (ones, 1, 0, [[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]], 1.0),
        (twos, 2, 1, [[2.0, 2.0], [2.0, 2.0]], [[-0.5, 0.5], [1.5, 2.5]], 0.0),  # v: the max, not the mean
        (ones, 3, 1, [[2.0, 2.0], [2.0, 2.0]], [[-0.5, 0.5], [1.5, 2.5]], 1.0),
    ]
    for gradient, micro_steps, iterations, weights, weights2, accumulated in expected:
        optimizer.apply_gradients([(gradient, v), (gradient, v2)])
        assert int(core._iterations) == micro_steps and int(optimizer.iterations) == iterations
        np.testing.assert_allclose(v, weights)
        np.testing.assert_allclose(v2, weights2)
        for accumulator in core._accumulated_gradients:
            np.testing.assert_allclose(accumulator, np.full((2, 2), accumulated))


@pytest.mark.parametrize("name", BUILT_INS)
def test_gradient_accumulation_with_weight_decay(name):
    optimizer1 = keras.optimizers.get({"class_name": name, "config": {"weight_decay": 0.05}})
    optimizer3 = wrap(
        keras.optimizers.get({"class_name": name, "config": {"weight_decay": 0.05, "gradient_accumulation_steps": 3}})
    )
    variable1 = keras.Variable([[0.9], [0.5]])
    variable3 = keras.Variable([[0.9], [0.5]])
    rng = np.random.default_rng(0)
    for _ in range(8):
        grads3 = rng.random([3, 2, 1]).astype("float32")
        optimizer1.apply_gradients([(tf.constant(grads3.mean(axis=0)), variable1)])
        for batch in range(3):
            optimizer3.apply_gradients([(tf.constant(grads3[batch]), variable3)])
    np.testing.assert_allclose(variable1, variable3, rtol=1e-5, atol=1e-6)


def test_adam_counts_updates_under_accumulation():
    # Adam's first update is lr · m̂/√v̂ = 0.1 for a constant gradient; two updates: 1 → 0.8.
    v = keras.Variable([1.0])
    optimizer = wrap(keras.optimizers.Adam(0.1, gradient_accumulation_steps=3))
    for _ in range(6):
        optimizer.apply([constant([0.5])], [v])
    np.testing.assert_allclose(v, [0.8], rtol=1e-5)


def test_sgd_single_step():
    optimizer = wrap(keras.optimizers.SGD(learning_rate=0.5))
    variable = keras.Variable([1.0, 2.0, 3.0, 4.0])
    optimizer.build([variable])
    optimizer.apply_gradients(zip([constant([1.0, 6.0, 7.0, 2.0])], [variable]))
    np.testing.assert_allclose(variable, [0.5, -1.0, -0.5, 3.0], rtol=1e-4, atol=1e-4)
    assert int(optimizer.core_optimizer.variables[0]) == 1
    assert float(optimizer.core_optimizer.variables[1]) == 0.5


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_weight_decay(name):
    grads = tf.zeros(())
    var1, var2, var3 = keras.Variable(2.0), keras.Variable(2.0, name="exclude"), keras.Variable(2.0)

    def make():
        return wrap(keras.optimizers.get({"class_name": name, "config": {"learning_rate": 1.0, "weight_decay": 0.004}}))

    make().apply_gradients(zip([grads], [var1]))
    optimizer_2 = make()
    optimizer_2.exclude_from_weight_decay(var_names=["exclude"])
    optimizer_2.apply_gradients(zip([grads, grads], [var1, var2]))
    optimizer_3 = make()
    optimizer_3.exclude_from_weight_decay(var_list=[var3])
    optimizer_3.apply_gradients(zip([grads, grads], [var1, var3]))
    np.testing.assert_allclose(var1, 1.9760959, atol=1e-6)
    np.testing.assert_allclose(var2, 2.0, atol=1e-6)
    np.testing.assert_allclose(var3, 2.0, atol=1e-6)


@pytest.mark.parametrize(
    "inner, golden",
    [
        (
            lambda: keras.optimizers.SGD(nesterov=True),
            [np.full(10, 0.9999)] + [1 - 0.0001 - k * 0.001 * np.arange(1, 11) for k in range(1, 5)],
        ),
        (
            lambda: keras.optimizers.Adam(amsgrad=True),
            [np.full(10, g) for g in [0.999, 0.9982, 0.9974, 0.9965, 0.9955]],
        ),
    ],
    ids=["sgd", "adam"],
)
def test_correctness_with_golden(inner, golden):
    optimizer = wrap(inner())
    x = keras.Variable(np.ones([10], "float32"))
    grads = tf.range(0.1, 1.1, 0.1)
    optimizer.apply_gradients(zip([tf.fill((10,), 0.01)], [x]))
    for expected in golden:
        np.testing.assert_allclose(x, expected, rtol=5e-4, atol=5e-4)
        optimizer.apply_gradients(zip([grads], [x]))


def test_adam_single_step():
    variable = keras.Variable([1.0, 2.0, 3.0, 4.0])
    wrap(keras.optimizers.Adam(learning_rate=0.5)).apply_gradients(zip([constant([1.0, 6.0, 7.0, 2.0])], [variable]))
    np.testing.assert_allclose(variable, [0.5, 1.5, 2.5, 3.5], rtol=1e-4, atol=1e-4)


def random_steps(seed, steps=4):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(2,)).astype("float32")] for _ in range(steps)]


FEATURES = {
    "plain": {},
    "accumulation": {"gradient_accumulation_steps": 2},
    "weight_decay": {"weight_decay": 0.05},
    "ema_overwrite": {"use_ema": True, "ema_momentum": 0.7, "ema_overwrite_frequency": 2},
    "ema_accumulation": {
        "use_ema": True,
        "ema_momentum": 0.7,
        "ema_overwrite_frequency": 2,
        "gradient_accumulation_steps": 2,
    },
    "loss_scale_factor": {"loss_scale_factor": 3.0},
    "schedule": {"learning_rate": keras.optimizers.schedules.ExponentialDecay(0.05, 1, 0.5)},
}


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("name", BUILT_INS)
def test_bit_for_bit_what_the_inner_optimizer_does_alone(name, feature):
    # Without a transform the wrapper must not change one bit of the variables or the optimizer
    # state, whatever Keras feature the inner optimizer uses.
    def run(make_optimizer):
        keras.utils.set_random_seed(0)
        variables = [keras.Variable(np.full((3, 2), 0.5, "float32")), keras.Variable(np.full((2,), -0.5, "float32"))]
        optimizer = make_optimizer()
        for grads in random_steps(1):
            optimizer.apply([tf.constant(g) for g in grads], variables)
        return [v.numpy() for v in variables], optimizer

    config = {"class_name": name, "config": dict(FEATURES[feature])}
    alone, keras_optimizer = run(lambda: keras.optimizers.get(config))
    wrapped, wrapper = run(lambda: wrap(keras.optimizers.get(config)))
    for a, b in zip(alone, wrapped):
        np.testing.assert_array_equal(a, b)
    assert int(wrapper.iterations) == int(keras_optimizer.iterations)
    for a, b in zip(keras_optimizer.variables, wrapper.inner_optimizer.variables):
        np.testing.assert_array_equal(a, b, err_msg=a.path)


def test_deliberate_difference_repeated_sparse_indices():
    # An Embedding row looked up twice: the dense gradient's row is [3, 4] + [3, 4] = [6, 8], norm 10.
    # Keras's clipnorm (tf.clip_by_norm on the IndexedSlices) measures the two stored rows apart,
    # norm √50 = 7.07, and under-clips; the wrapper clips the dense gradient to norm 1: [0.6, 0.8].
    gradient = tf.IndexedSlices(constant([[3.0, 4.0], [3.0, 4.0]]), tf.constant([1, 1]), tf.constant([3, 2]))
    keras_table, wrapped_table = keras.Variable(tf.zeros((3, 2))), keras.Variable(tf.zeros((3, 2)))
    keras.optimizers.SGD(1.0, clipnorm=1.0).apply([gradient], [keras_table])
    wrap(keras.optimizers.SGD(1.0), ks.clip_by_norm(1.0)).apply([gradient], [wrapped_table])
    np.testing.assert_allclose(-wrapped_table.numpy()[1], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(-keras_table.numpy()[1], 2 * np.array([3.0, 4.0]) / 50**0.5, rtol=1e-6)
