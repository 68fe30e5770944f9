"""The correctness guard of the fast training path (issue #6's benchmark measures its speed).

The runner trains through `compiled_model` + `fit_epoch`: by default `train_epoch` (a whole epoch as
one graph execution, batches gathered from device tensors, no tf.data), with an explicit
`steps_per_execution` Keras `fit` over `epoch_dataset`. Both must end with the same weights, and log
the same per-step norms, as the simplest possible path: an eager loop over numpy batches with
`tf.GradientTape` and `tf.clip_by_global_norm`, one step per call. 160 examples in batches of 25
leave a remainder batch of 10.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stability as ks
from keras_stability.config.schema import RunConfig
from keras_stability.config.transform_specs import TRANSFORM_SPECS
from keras_stability.experiments.runner import fit_epoch
from keras_stability.experiments.training import compiled_model
from keras_stability.experiments.zoo import build_model

BATCH, EXAMPLES, EPOCHS, MAX_NORM = 25, 160, 2, 0.5
CONFIG = {
    "name": "guard",
    "model": {"name": "mlp", "hidden": [16, 8]},
    "optimizer": {"name": "sgd", "learning_rate": 0.3, "momentum": 0.9},
    "stabilizer": {"transforms": [{"name": "clip_by_global_norm", "max_norm": MAX_NORM}]},
    "training": {"epochs": EPOCHS, "batch_size": BATCH},
}


def data():
    rng = np.random.default_rng(7)
    x = rng.random((EXAMPLES, 28, 28, 1), dtype=np.float32)
    return x, rng.integers(0, 10, EXAMPLES).astype(np.int32)


def orders():
    rng = np.random.default_rng(11)
    return [rng.permutation(EXAMPLES) for _ in range(EPOCHS)]


def simple_path(initial_weights, x, y):
    """Eager, one step per Python iteration, the textbook clipped SGD loop."""
    model = build_model(RunConfig(**CONFIG).model)
    model.set_weights(initial_weights)
    optimizer = keras.optimizers.SGD(0.3, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    norms = []
    for order in orders():
        for start in range(0, EXAMPLES, BATCH):
            batch = order[start : start + BATCH]
            with tf.GradientTape() as tape:
                loss = loss_fn(y[batch], model(x[batch], training=True))
            gradients = tape.gradient(loss, model.trainable_variables)
            clipped, norm = tf.clip_by_global_norm(gradients, MAX_NORM)
            optimizer.apply(clipped, model.trainable_variables)
            norms.append(float(norm))
    return model.get_weights(), np.array(norms)


@pytest.mark.parametrize(
    "training",
    [{}, {"jit_compile": True}, {"steps_per_execution": 7}],
    ids=["train_epoch-graph", "train_epoch-jit", "keras_fit-steps_per_execution"],
)
def test_fast_path_ends_with_the_simple_paths_weights(training):
    x, y = data()
    steps = -(-EXAMPLES // BATCH)
    config = RunConfig(**{**CONFIG, "training": {**CONFIG["training"], **training}})
    keras.utils.set_random_seed(0)
    fast = compiled_model(config, steps, "classification")
    fast.build((None, 28, 28, 1))
    initial = fast.get_weights()
    logged = []
    for epoch, order in enumerate(orders(), start=1):
        logs = fit_epoch(fast, config.training, tf.constant(x), tf.constant(y), order, epoch)
        logged.append(fast.step_log.drain())
    reference, reference_norms = simple_path(initial, x, y)
    logged = np.concatenate(logged)
    assert len(logged) == EPOCHS * steps
    np.testing.assert_allclose(logged[:, 1], reference_norms, rtol=1e-4)
    np.testing.assert_allclose(logged[:, 2], np.minimum(reference_norms, MAX_NORM), rtol=1e-4)
    assert (reference_norms > MAX_NORM).any() and (reference_norms < MAX_NORM).any()
    last_epoch = reference_norms[-steps:]
    np.testing.assert_allclose(logs["grad_norm"], last_epoch.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["clip_rate"], (last_epoch > MAX_NORM).mean(), rtol=1e-6)
    for fast_weight, simple_weight in zip(fast.get_weights(), reference):
        np.testing.assert_allclose(fast_weight, simple_weight, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("run_eagerly", [False, True], ids=["graph", "eager"])
def test_train_epoch_logs_what_fit_reports_for_any_keras_model(run_eagerly):
    x, y = data()
    order = orders()[0]

    def plain_model():
        keras.utils.set_random_seed(0)
        model = build_model(RunConfig(**CONFIG).model)
        model.compile(
            keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            run_eagerly=run_eagerly,
        )
        return model

    through_fit, through_loop = plain_model(), plain_model()
    history = through_fit.fit(x[order], y[order], batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history
    logs = ks.train_epoch(through_loop, tf.constant(x), tf.constant(y), order, BATCH)
    assert set(logs) == set(history)
    for name in logs:
        np.testing.assert_allclose(logs[name], history[name][-1], rtol=1e-5)
    for a, b in zip(through_loop.get_weights(), through_fit.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"batch_size": 0}, r"`batch_size` must be an integer ≥ 1. Received: batch_size=0"),
        ({"order": np.zeros((0,), np.int32)}, r"`order` must be a non-empty vector of example indices"),
        ({"order": np.zeros((2, 2), np.int32)}, r"Received: shape \(2, 2\)"),
    ],
)
def test_train_epoch_refuses_bad_arguments_clearly(arguments, message):
    x, y = data()
    model = compiled_model(RunConfig(**CONFIG), 1, "classification")
    call = {"model": model, "x": tf.constant(x), "y": tf.constant(y), "order": orders()[0], "batch_size": BATCH}
    with pytest.raises(ValueError, match=message):
        ks.train_epoch(**{**call, **arguments})


def test_train_epoch_needs_a_compiled_model():
    x, y = data()
    with pytest.raises(ValueError, match="train_epoch needs a compiled model"):
        ks.train_epoch(build_model(RunConfig(**CONFIG).model), tf.constant(x), tf.constant(y), orders()[0], BATCH)


# Every registered transform with options that make it act within two epochs of this data.
TRANSFORM_EXAMPLES = {
    "clip_by_value": {"limit": 0.01},
    "clip_by_norm": {"max_norm": 0.1},
    "clip_by_global_norm": {"max_norm": 0.2},
    "normalize_gradient": {"scale": 0.5},
    "adaptive_clip": {"clip_factor": 0.01},
    "autoclip": {"percentile": 50.0, "history": 8},
    "zclip": {"warmup": 3, "z_threshold": 0.5},
    "clip_by_l1_norm": {"max_norm": 1.0},
    "regularize_gradient": {"l1": 0.01, "l2": 0.1},
    "quantized_ema_clip": {"limit": 0.1, "levels": 8, "decay": 0.5},
    "adagc": {"warmup": 2, "clip_ratio": 1.0},
}


def test_the_examples_cover_every_registered_transform():
    assert sorted(TRANSFORM_EXAMPLES) == sorted(TRANSFORM_SPECS)


# A transform that returns some gradients untouched (AGC excluding the head): the skip policy's
# tf.cond must hand the update graph tensors of its own branch (the cross-replica sum refused the
# outer graph's: "All custom_gradient outputs should be from the same graph").
PASS_THROUGH = {"name": "adaptive_clip", "clip_factor": 0.01, "exclude": ["logits"]}


@pytest.mark.parametrize(
    "transform",
    [{"name": name, **options} for name, options in sorted(TRANSFORM_EXAMPLES.items())] + [PASS_THROUGH],
    ids=lambda transform: transform["name"] + ("_excluding_the_head" if "exclude" in transform else ""),
)
def test_each_transform_trains_in_the_graph_epoch_as_eagerly(transform):
    """The graph epoch calls `train_step` without AutoGraph, as Keras's `fit` does: a transform's
    control flow on tensors must be graph ops, or its numbers would differ from the eager loop's."""
    x, y = data()
    config = RunConfig(**{**CONFIG, "stabilizer": {"transforms": [transform], "nonfinite": "skip"}})
    steps = -(-EXAMPLES // BATCH)
    weights = []
    for run_eagerly in (False, True):
        keras.utils.set_random_seed(0)
        model = compiled_model(config, steps, "classification")
        model.run_eagerly = run_eagerly
        for order in orders():
            ks.train_epoch(model, tf.constant(x), tf.constant(y), order, BATCH)
        weights.append(model.get_weights())
        norms = model.step_log.drain()
    assert (norms[:, 2] != norms[:, 1]).any()  # the transform changed some gradients
    for graph, eager in zip(*weights, strict=True):
        np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-6)
