"""Sharpness against exact eigenvalues: the full Hessian by TF's Jacobian of the gradient, numpy's
eigensolvers, a quadratic in closed form, and Adam's preconditioner against Keras's own update."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stability as ks
from keras_stability.sharpness import adam_preconditioner, hessian_vector_product


def tanh_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((3,), dtype="float64"),
            keras.layers.Dense(4, activation="tanh", dtype="float64"),
            keras.layers.Dense(2, dtype="float64"),
        ]
    )


def batch(seed=1, n=16):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)), rng.normal(size=(n, 2))


def full_hessian(model, x, y, loss="mse"):
    """The Hessian of the batch loss over all trainable variables, flattened in their order."""
    loss_fn = keras.losses.get(loss)
    variables = model.trainable_variables
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            value = tf.reduce_mean(loss_fn(y, model(x)))
        gradient = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(value, variables)], 0)
    blocks = outer.jacobian(gradient, variables)
    return np.concatenate([tf.reshape(b, [gradient.shape[0], -1]).numpy() for b in blocks], axis=1)


def exact_top(matrix):
    eigenvalues = np.linalg.eigvals(matrix).real
    return eigenvalues[np.argmax(np.abs(eigenvalues))]


@pytest.mark.parametrize("path", ["eager", "graph", "jit"])
def test_mlp_matches_the_full_hessians_top_eigenvalue(path):
    model, (x, y) = tanh_mlp(), batch()
    hessian = full_hessian(model, x, y)
    eigenvalues = np.linalg.eigvalsh(hessian)
    # The largest eigenvalue dominates the most negative one, so power iteration finds it.
    assert eigenvalues[-1] > 2 * abs(eigenvalues[0])

    def measure():
        return ks.top_hessian_eigenvalue(model, x, y, loss="mse", iterations=500, tolerance=1e-12, seed=3)

    if path != "eager":
        measure = tf.function(measure, jit_compile=path == "jit")
    np.testing.assert_allclose(float(measure()), eigenvalues[-1], rtol=1e-8)


def test_hessian_vector_product_is_the_hessian_times_the_vector():
    model, (x, y) = tanh_mlp(), batch()
    hessian = full_hessian(model, x, y)
    vector = np.random.default_rng(2).normal(size=hessian.shape[0])
    pieces, start = [], 0
    for v in model.trainable_variables:
        size = int(np.prod(v.shape))
        pieces.append(tf.constant(vector[start : start + size].reshape(v.shape)))
        start += size

    def loss_fn():
        return tf.reduce_mean(keras.losses.mean_squared_error(y, model(x)))

    product = hessian_vector_product(loss_fn, model.trainable_variables, pieces)
    np.testing.assert_allclose(np.concatenate([tf.reshape(p, [-1]) for p in product]), hessian @ vector, rtol=1e-10)


def test_least_squares_sharpness_is_twice_the_top_singular_value_squared_over_n():
    # loss(w) = mean((Xw − y)²) is a quadratic with H = 2·XᵀX/n at every w.
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(32, 5)), rng.normal(size=(32, 1))
    model = keras.Sequential(
        [keras.Input((5,), dtype="float64"), keras.layers.Dense(1, use_bias=False, dtype="float64")]
    )
    expected = 2 * np.linalg.svd(x, compute_uv=False)[0] ** 2 / len(x)
    measured = ks.top_hessian_eigenvalue(model, x, y, loss="mse", iterations=1000, tolerance=1e-14)
    np.testing.assert_allclose(float(measured), expected, rtol=1e-10)


def test_compiled_loss_includes_regularization():
    # An L2 penalty λ‖w‖² adds 2λ to every eigenvalue of the quadratic above (float32: Keras's
    # compiled loss is float32).
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(32, 5)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(1, use_bias=False, kernel_regularizer=keras.regularizers.L2(0.5))]
    )
    model.compile(keras.optimizers.SGD(0.1), "mse")
    expected = 2 * np.linalg.svd(x.astype("float64"), compute_uv=False)[0] ** 2 / len(x) + 2 * 0.5
    measured = ks.top_hessian_eigenvalue(model, x, y, iterations=1000, tolerance=1e-7)
    np.testing.assert_allclose(float(measured), expected, rtol=1e-5)


def adam_after(steps, model, x, y):
    optimizer = keras.optimizers.Adam(0.01, epsilon=1e-3)
    model.compile(optimizer, "mse")
    for _ in range(steps):
        model.train_on_batch(x, y)
    return optimizer


def test_adam_preconditioner_is_what_keras_divides_its_first_moment_by():
    # Cohen et al. (2022): w_{t} = w_{t-1} − η·P⁻¹·m_t, with P as of step t.
    model, (x, y) = tanh_mlp(), batch()
    optimizer = adam_after(3, model, x, y)
    before = [v.numpy() for v in model.trainable_variables]
    model.train_on_batch(x, y)
    preconditioner = adam_preconditioner(optimizer, model.trainable_variables)
    for variable, old, p in zip(model.trainable_variables, before, preconditioner):
        momentum = optimizer._momentums[optimizer._get_variable_index(variable)].numpy()
        np.testing.assert_allclose(old - variable.numpy(), 0.01 * momentum / p.numpy(), rtol=1e-6)


@pytest.mark.parametrize("path", ["eager", "graph"])
def test_preconditioned_sharpness_is_the_top_eigenvalue_of_p_inverse_h(path):
    model, (x, y) = tanh_mlp(), batch()
    optimizer = adam_after(5, model, x, y)
    preconditioner = adam_preconditioner(optimizer, model.trainable_variables)
    diagonal = np.concatenate([p.numpy().ravel() for p in preconditioner])
    expected = exact_top(np.linalg.solve(np.diag(diagonal), full_hessian(model, x, y)))

    def measure():
        return ks.top_hessian_eigenvalue(
            model, x, y, loss="mse", preconditioner=preconditioner, iterations=2000, tolerance=1e-13
        )

    if path == "graph":
        measure = tf.function(measure)
    np.testing.assert_allclose(float(measure()), expected, rtol=1e-7)


@pytest.mark.parametrize(
    "optimizer, expected",
    [
        (keras.optimizers.SGD(0.1), 2 / 0.1),
        (keras.optimizers.SGD(0.1, momentum=0.9), (2 + 2 * 0.9) / 0.1),
        (keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), (2 + 2 * 0.9) / (0.1 * (1 + 2 * 0.9))),
        (keras.optimizers.Adam(0.001), 38 / 0.001),
        (keras.optimizers.AdamW(0.001, beta_1=0.8), (2 + 1.6) / (0.2 * 0.001)),
        (ks.StabilizedOptimizer(keras.optimizers.Adam(0.001)), 38 / 0.001),
    ],
)
def test_stability_limit(optimizer, expected):
    np.testing.assert_allclose(float(ks.stability_limit(optimizer)), expected, rtol=1e-6)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("fraction, settles", [(0.98, True), (1.02, False)])
def test_sgd_on_a_quadratic_settles_below_the_limit_and_diverges_above_it(momentum, nesterov, fraction, settles):
    # f(w) = h·w²/2: Keras's own SGD step on it is stable exactly when h is below the limit.
    optimizer = keras.optimizers.SGD(0.1, momentum=momentum, nesterov=nesterov)
    curvature = fraction * float(ks.stability_limit(optimizer))
    w = keras.Variable([1.0])
    for _ in range(3000):
        optimizer.apply([curvature * w], [w])
    assert (abs(float(w[0])) < 1e-3) == settles


def test_stability_limit_refuses_unknown_optimizers():
    with pytest.raises(ValueError, match="Received: optimizer RMSprop"):
        ks.stability_limit(keras.optimizers.RMSprop())


def test_monitor_logs_the_measurement_every_n_steps():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(32, 3)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    monitor = ks.SharpnessMonitor(x, y, every_n_steps=2, iterations=200, tolerance=1e-7)
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[monitor])
    assert [r["step"] for r in monitor.records] == [2, 4, 6, 8]
    # The last measurement, at step 8, saw the final weights.
    final = ks.top_hessian_eigenvalue(model, x, y, iterations=200, tolerance=1e-7)
    np.testing.assert_allclose(history.history["sharpness"][-1], float(final), rtol=1e-5)
    np.testing.assert_allclose(history.history["sharpness_limit"], [40.0, 40.0], rtol=1e-6)
    assert history.history["sharpness"][0] == monitor.records[1]["sharpness"]


def test_monitor_with_steps_per_execution_measures_once_a_multiple_is_passed():
    x, y = np.ones((24, 3), "float32"), np.zeros((24, 2), "float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.05), "mse", steps_per_execution=3)
    monitor = ks.SharpnessMonitor(x, y, every_n_steps=4, iterations=5)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[monitor])  # batch ends at 3, 6, 9, 12
    assert [r["step"] for r in monitor.records] == [6, 9, 12]


def test_monitor_preconditions_for_adam():
    model, (x, y) = tanh_mlp(), batch()
    model.compile(keras.optimizers.Adam(0.01, epsilon=1e-3), "mse")
    monitor = ks.SharpnessMonitor(x, y, every_n_steps=3, iterations=2000, tolerance=1e-13)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[monitor])
    preconditioner = adam_preconditioner(model.optimizer, model.trainable_variables)
    diagonal = np.concatenate([p.numpy().ravel() for p in preconditioner])
    expected = exact_top(np.linalg.solve(np.diag(diagonal), full_hessian(model, x, y)))
    assert monitor.records[-1]["step"] == 3
    np.testing.assert_allclose(monitor.records[-1]["sharpness"], expected, rtol=1e-5)
    np.testing.assert_allclose(monitor.records[-1]["sharpness_limit"], 3800.0, rtol=1e-6)


def test_monitor_refuses_a_bad_interval():
    with pytest.raises(ValueError, match="Received: every_n_steps=0"):
        ks.SharpnessMonitor(np.ones((1, 1)), np.ones((1, 1)), every_n_steps=0)
