"""MirroredStrategy on two logical CPUs: the same results as one device, where Keras's own clipping is not."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stability as ks

pytestmark = pytest.mark.slow  # trains many runs end to end

SINGLE = tf.distribute.get_strategy


def negative_product(y_true, y_pred):
    return tf.reduce_mean(-y_true * y_pred, axis=-1)


def linear_fit(strategy, x, y, transform=None, keras_clip=None, nonfinite="skip"):
    with strategy.scope():
        inner = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
        if keras_clip is None:
            model = ks.stabilize(inner, transform, nonfinite=nonfinite)
            model.compile(optimizer=keras.optimizers.SGD(1.0), loss=negative_product)
        else:
            model = inner
            model.compile(optimizer=keras.optimizers.SGD(1.0, **keras_clip), loss=negative_product)
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history
    return float(model.get_weights()[0][0, 0]), history


# Replica 0 sees y = 40 (gradient -20 after Keras divides the loss by 2 replicas), replica 1 sees
# y = 4 (gradient -2). One device: gradient -22, clipped to norm 1 → w = 1.
X = np.ones((2, 1), np.float32)
Y = np.array([[40.0], [4.0]], np.float32)


@pytest.mark.parametrize("argument", ["global_clipnorm", "clipnorm"])
def test_keras_clips_per_replica_and_gets_it_wrong(two_replicas, argument):
    single, _ = linear_fit(SINGLE(), X, Y, keras_clip={argument: 1.0})
    mirrored, _ = linear_fit(two_replicas, X, Y, keras_clip={argument: 1.0})
    assert single == pytest.approx(1.0)
    assert mirrored == pytest.approx(2.0)  # each replica clipped to 1 before the sum


def test_clipping_after_the_all_reduce_matches_one_device(two_replicas):
    single, single_history = linear_fit(SINGLE(), X, Y, ks.clip_by_global_norm(1.0))
    mirrored, history = linear_fit(two_replicas, X, Y, ks.clip_by_global_norm(1.0))
    assert single == pytest.approx(1.0) and mirrored == pytest.approx(1.0)
    # The logged norm is the norm of the summed gradient, 22 — not the mean of 20 and 2 (11).
    np.testing.assert_allclose(history["grad_norm"], [22.0], rtol=1e-6)
    np.testing.assert_allclose(history["clipped_norm"], [1.0], rtol=1e-6)
    assert history == single_history


def test_nan_on_one_replica_skips_the_step_everywhere(two_replicas):
    y = np.array([[np.nan], [4.0]], np.float32)
    weight, history = linear_fit(two_replicas, X, y, ks.clip_by_global_norm(1.0))
    assert weight == 0.0
    assert history["nonfinite_steps"] == [1.0]
    model_weights = []
    with two_replicas.scope():
        inner = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
        model = ks.stabilize(inner, ks.clip_by_global_norm(1.0))
        model.compile(optimizer=keras.optimizers.SGD(1.0, momentum=0.9), loss=negative_product)
    model.fit(X, y, batch_size=2, epochs=1, verbose=0)
    for variable in model.optimizer.variables + model.trainable_variables:
        replicas = variable.value.values if hasattr(variable.value, "values") else [variable.value]
        model_weights.append([np.asarray(r.numpy()) for r in replicas])
    for copies in model_weights:  # every replica holds the same, untouched value
        for copy in copies[1:]:
            np.testing.assert_array_equal(copies[0], copy)


TRANSFORMS = {
    "none": lambda: None,
    "clip_by_value": lambda: ks.clip_by_value(0.05),
    "clip_by_norm": lambda: ks.clip_by_norm(0.3),
    "clip_by_global_norm": lambda: ks.clip_by_global_norm(0.5),
    "normalize_gradient": lambda: ks.normalize_gradient(0.4),
    "adaptive_clip": lambda: ks.adaptive_clip(0.02),
    "autoclip": lambda: ks.autoclip(25, history=8),
    "zclip": lambda: ks.zclip(alpha=0.5, z_threshold=0.1, warmup=2),
    "chain": lambda: ks.chain(ks.adaptive_clip(0.05), ks.clip_by_global_norm(0.5)),
}


def mlp_fit(strategy, transform, accumulation=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    keras.utils.set_random_seed(1)
    with strategy.scope():
        inner = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
        model = ks.stabilize(inner, transform)
        model.compile(
            optimizer=keras.optimizers.SGD(0.5, momentum=0.9, gradient_accumulation_steps=accumulation),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    return model.get_weights(), history


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_every_transform_trains_the_same_on_two_replicas(two_replicas, name):
    single, single_history = mlp_fit(SINGLE(), TRANSFORMS[name]())
    mirrored, history = mlp_fit(two_replicas, TRANSFORMS[name]())
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in ["loss", "grad_norm", "clipped_norm", "clip_rate"]:
        np.testing.assert_allclose(history[key], single_history[key], rtol=1e-5, err_msg=key)
    if name not in ("none",):
        assert max(history["clip_rate"]) > 0


def test_gradient_accumulation_on_two_replicas(two_replicas):
    single, _ = mlp_fit(SINGLE(), ks.clip_by_global_norm(0.5), accumulation=2)
    mirrored, _ = mlp_fit(two_replicas, ks.clip_by_global_norm(0.5), accumulation=2)
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sparse_embedding_gradients_on_two_replicas(two_replicas):
    ids = np.array([[1, 1, 2, 1]] * 8, np.int32)
    targets = np.ones((8, 1), np.float32)

    def fit(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            inner = keras.Sequential(
                [
                    keras.Input((4,), dtype="int32"),
                    keras.layers.Embedding(5, 3),
                    keras.layers.GlobalAveragePooling1D(),
                    keras.layers.Dense(1),
                ]
            )
            model = ks.stabilize(inner, ks.clip_by_global_norm(0.01))
            model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        history = model.fit(ids, targets, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        return model.get_weights(), history

    single, single_history = fit(SINGLE())
    mirrored, history = fit(two_replicas)
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(history["grad_norm"], single_history["grad_norm"], rtol=1e-5)


def test_step_log_records_the_global_batch_loss(two_replicas):
    def fit(strategy):
        with strategy.scope():
            inner = keras.Sequential(
                [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
            )
            model = ks.StabilizedModel(inner, ks.clip_by_global_norm(1.0), step_log=4)
            model.compile(optimizer=keras.optimizers.SGD(1.0), loss=negative_product)
        model.fit(
            np.ones((4, 1), np.float32),
            np.array([[40.0], [4.0], [0.5], [0.5]], np.float32),
            batch_size=2,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        return model.step_log.drain()

    # Step 1: w = 0, loss 0, norm 22 → clipped 1, w = 1. Step 2: loss = -mean(0.5·1) = -0.5, norm 0.5.
    expected = [[0.0, 22.0, 1.0], [-0.5, 0.5, 0.5]]
    np.testing.assert_allclose(fit(SINGLE()), expected, rtol=1e-6)
    np.testing.assert_allclose(fit(two_replicas), expected, rtol=1e-6)


def test_train_epoch_sends_replicated_models_to_fit(two_replicas):
    with two_replicas.scope():
        inner = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
        model = ks.stabilize(inner, ks.clip_by_global_norm(1.0))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=negative_product)
    with pytest.raises(ValueError, match=re.escape("trains with model.fit. Received: a model on 2 replicas")):
        ks.train_epoch(model, X, Y, np.arange(2), 2)


def reduction_ops(graph_def):
    """Cross-replica reduction ops in a traced graph and its function library, by type."""
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    kinds = ("AllReduce", "CollectiveReduce", "CollectiveGather")
    return sorted(n.op for n in nodes if any(k in n.op for k in kinds))


def traced_step_reductions(strategy, optimizer):
    with strategy.scope():
        inner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model = ks.stabilize(inner, ks.clip_by_global_norm(1.0))
        model.compile(optimizer=optimizer, loss="mse")
    model.build((None, 2))
    model.optimizer.build(model.trainable_variables)

    @tf.function
    def step(x, y):
        return strategy.run(model.train_step, args=((x, y),))

    concrete = step.get_concrete_function(tf.TensorSpec((4, 2)), tf.TensorSpec((4, 1)))
    return reduction_ops(concrete.graph.as_graph_def())


def test_one_all_reduce_of_the_gradient_per_step(two_replicas):
    # MirroredStrategy on CPUs reduces with one collective op per call; Keras's own update is one
    # all_reduce of the gradients. The wrapper all-reduces the gradients once too, then updates in
    # cross-replica context, where the inner optimizer has nothing to reduce. The other reductions
    # are the metrics' (loss, telemetry) and do not depend on the number of variables.
    with two_replicas.scope():
        plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        plain.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    plain.build((None, 2))
    plain.optimizer.build(plain.trainable_variables)

    @tf.function
    def keras_step(x, y):
        return two_replicas.run(plain.train_step, args=((x, y),))

    keras_ops = reduction_ops(
        keras_step.get_concrete_function(tf.TensorSpec((4, 2)), tf.TensorSpec((4, 1))).graph.as_graph_def()
    )
    wrapped_ops = traced_step_reductions(two_replicas, keras.optimizers.SGD(0.1))
    assert keras_ops, "no reduction op found: the op names changed"

    def gradient_reductions(ops):
        return [op for op in ops if "Gather" not in op]

    # The telemetry adds no gradient reduction: same count as Keras, not twice the gradient's.
    assert len(gradient_reductions(wrapped_ops)) == len(gradient_reductions(keras_ops)), (keras_ops, wrapped_ops)


def test_nadam_still_trains_the_same_on_two_replicas(two_replicas):
    # Nadam adds per-step work to Keras's replica-context update, so it takes the shared path.
    def fit(strategy):
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(32, 5)).astype(np.float32), rng.normal(size=(32, 1)).astype(np.float32)
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = ks.stabilize(
                keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)]), ks.clip_by_global_norm(0.5)
            )
            model.compile(optimizer=keras.optimizers.Nadam(0.05, weight_decay=0.01), loss="mse")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    for a, b in zip(fit(SINGLE()), fit(two_replicas)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
