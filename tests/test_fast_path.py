"""The correctness guard of the fast training path (issue #6's benchmark measures its speed).

The runner trains through `compiled_model` + `epoch_dataset`: a whole epoch per execution, the
input gathered from device tensors, telemetry accumulated on the device. Here it must end with the
same weights, and log the same per-step norms, as the simplest possible path: an eager loop over
numpy batches with `tf.GradientTape` and `tf.clip_by_global_norm`, one step per call.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_stability.experiments.schema import RunConfig
from keras_stability.experiments.training import compiled_model, epoch_dataset, steps_per_execution
from keras_stability.experiments.zoo import build_model

BATCH, EXAMPLES, EPOCHS, MAX_NORM = 25, 150, 2, 0.5
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


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "jit"])
def test_fast_path_ends_with_the_simple_paths_weights(jit_compile):
    x, y = data()
    steps = EXAMPLES // BATCH
    config = RunConfig(**{**CONFIG, "training": {**CONFIG["training"], "jit_compile": jit_compile}})
    assert steps_per_execution(config.training, steps) == steps  # the whole epoch in one execution
    keras.utils.set_random_seed(0)
    fast = compiled_model(config, steps, "classification")
    fast.build((None, 28, 28, 1))
    initial = fast.get_weights()
    logged = []
    for order in orders():
        fast.fit(epoch_dataset(tf.constant(x), tf.constant(y), order, BATCH), epochs=1, shuffle=False, verbose=0)
        logged.append(fast.step_log.drain())
    reference, reference_norms = simple_path(initial, x, y)
    logged = np.concatenate(logged)
    assert len(logged) == EPOCHS * steps
    np.testing.assert_allclose(logged[:, 1], reference_norms, rtol=1e-4)
    np.testing.assert_allclose(logged[:, 2], np.minimum(reference_norms, MAX_NORM), rtol=1e-4)
    assert (reference_norms > MAX_NORM).any() and (reference_norms < MAX_NORM).any()
    for fast_weight, simple_weight in zip(fast.get_weights(), reference):
        np.testing.assert_allclose(fast_weight, simple_weight, rtol=1e-4, atol=1e-6)
