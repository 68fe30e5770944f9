"""`evaluate_arrays` reports what Keras `evaluate` reports, eagerly, as a graph and under XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_stability.config.schema import RunConfig
from keras_stability.experiments.evaluation import evaluate_arrays
from keras_stability.experiments.training import compiled_model

# 230 examples in batches of 100: two full batches and a remainder of 30.
EXAMPLES, BATCH = 230, 100


def model_and_data(task, **training):
    rng = np.random.default_rng(3)
    if task == "classification":
        config = RunConfig(name="evaluation", model={"name": "mlp", "hidden": [16]}, training=training)
        x = rng.random((EXAMPLES, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, EXAMPLES).astype(np.int32)
    else:
        config = RunConfig(
            name="evaluation", dataset={"name": "adding_problem"}, model={"name": "rnn", "units": 8}, training=training
        )
        x = rng.random((EXAMPLES, 12, 2), dtype=np.float32)
        y = rng.random((EXAMPLES, 1), dtype=np.float32)
    keras.utils.set_random_seed(0)
    return compiled_model(config, 3, task), x, y


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("mode", ["graph", "eager", "jit"])
def test_evaluate_arrays_equals_keras_evaluate(task, mode):
    model, x, y = model_and_data(task, jit_compile=mode == "jit")
    model.run_eagerly = mode == "eager"
    expected = model.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
    for _ in range(2):  # the second call reuses the traced function and starts from reset metrics
        logs = evaluate_arrays(model, tf.constant(x), tf.constant(y), BATCH)
        assert set(logs) == set(expected) == {"loss", "accuracy"}
        for name in logs:
            np.testing.assert_allclose(logs[name], expected[name], rtol=1e-6, err_msg=name)


def test_evaluate_arrays_weights_batches_by_size():
    # The loss is the mean over examples, not over batches: check it against the whole set at once.
    model, x, y = model_and_data("classification")
    logs = evaluate_arrays(model, x, y, BATCH)
    per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(y, model(x))
    np.testing.assert_allclose(logs["loss"], float(tf.reduce_mean(per_example)), rtol=1e-5)
    accuracy = np.mean(np.argmax(model(x).numpy(), axis=-1) == y)
    np.testing.assert_allclose(logs["accuracy"], accuracy, rtol=1e-6)


def test_fewer_examples_than_one_batch():
    model, x, y = model_and_data("classification")
    expected = model.evaluate(x[:40], y[:40], batch_size=BATCH, verbose=0, return_dict=True)
    logs = evaluate_arrays(model, x[:40], y[:40], BATCH)
    np.testing.assert_allclose(logs["loss"], expected["loss"], rtol=1e-6)
