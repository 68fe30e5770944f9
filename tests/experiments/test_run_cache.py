"""A compiled model reused by the next run starts exactly where a freshly built one would."""

import numpy as np
import tensorflow as tf

from keras_stability.config.schema import RunConfig
from keras_stability.datasets.registry import DIGITS, Task
from keras_stability.epoch_loop import train_epoch
from keras_stability.experiments import checkpoint
from keras_stability.experiments.run_cache import forget_everything, model_for_run, training_shape
from keras_stability.experiments.runner import configure_determinism
from keras_stability.experiments.training import compiled_model

CONFIG = RunConfig(
    name="cache",
    model={"name": "mlp", "hidden": [16], "dropout": 0.2},
    optimizer={"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "schedule": {"name": "cosine"}},
    stabilizer={"transforms": [{"name": "zclip", "warmup": 2}]},
    training={"epochs": 2, "batch_size": 20},
)


def state(model):
    return [np.array(v.numpy()) for v in checkpoint.state_variables(model)]


def test_a_reused_model_is_reset_to_a_fresh_build_for_its_seed():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((60, 28, 28, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, 60).astype(np.int32))
    other = CONFIG.model_copy(update={"seeds": [7], "description": "another run of the same shape"})
    configure_determinism(3)
    fresh = model_for_run(CONFIG, 3, DIGITS, 3)
    fresh_state = state(fresh)
    train_epoch(fresh, x, y, np.arange(60), 20)  # moves weights, momentum, iterations, ZClip, dropout seeds
    assert not all(np.array_equal(a, b) for a, b in zip(state(fresh), fresh_state))
    configure_determinism(3)
    reused = model_for_run(other, 3, DIGITS, 3)
    assert reused is fresh  # same training shape: the compiled model is kept
    for a, b, variable in zip(state(reused), fresh_state, checkpoint.state_variables(reused)):
        np.testing.assert_array_equal(a, b, err_msg=variable.path)
    configure_determinism(4)
    assert not np.array_equal(state(model_for_run(CONFIG, 3, DIGITS, 4))[0], fresh_state[0])


def test_the_training_shape_ignores_seed_name_and_description_only():
    same = CONFIG.model_copy(update={"name": "renamed", "seeds": [1, 2], "description": "x"})
    assert training_shape(same, 3, DIGITS) == training_shape(CONFIG, 3, DIGITS)
    changed = CONFIG.model_copy(update={"training": CONFIG.training.model_copy(update={"epochs": 3})})
    assert training_shape(changed, 3, DIGITS) != training_shape(CONFIG, 3, DIGITS)
    assert training_shape(CONFIG, 4, DIGITS) != training_shape(CONFIG, 3, DIGITS)


def with_learning_rate(config, rate, schedule="constant"):
    document = config.model_dump()
    document["optimizer"].update(learning_rate=rate, schedule={"name": schedule})
    return RunConfig.model_validate(document)


def test_a_constant_learning_rate_is_not_part_of_the_training_shape_but_a_schedules_is():
    constant = training_shape(with_learning_rate(CONFIG, 0.5), 3, DIGITS)
    assert constant.key == training_shape(with_learning_rate(CONFIG, 0.1), 3, DIGITS).key
    assert constant.learning_rate == 0.5  # set into the cached graph's variable for this run
    cosine = training_shape(with_learning_rate(CONFIG, 0.5, "cosine"), 3, DIGITS)
    assert cosine.key != training_shape(with_learning_rate(CONFIG, 0.1, "cosine"), 3, DIGITS).key
    assert cosine.learning_rate is None  # the schedule's rate is a constant in its graph


def trained_weights(config, seed, x, y):
    configure_determinism(seed)
    model = model_for_run(config, 3, DIGITS, seed)
    train_epoch(model, x, y, np.arange(60), 20)
    return model, [v.numpy() for v in model.trainable_variables], float(model.optimizer.learning_rate)


def test_a_model_reused_at_another_learning_rate_trains_as_one_built_for_it():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.random((60, 28, 28, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, 60).astype(np.int32))
    slow, fast = with_learning_rate(CONFIG, 0.01), with_learning_rate(CONFIG, 0.3)
    forget_everything()
    built_fast, expected, _ = trained_weights(fast, 5, x, y)
    forget_everything()
    built_slow, _, _ = trained_weights(slow, 5, x, y)
    reused, weights, rate = trained_weights(fast, 5, x, y)
    assert reused is built_slow and reused is not built_fast  # one graph for both rates
    assert rate == np.float32(0.3)
    for got, want in zip(weights, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    forget_everything()


def test_the_new_initializers_reinitialise_as_a_fresh_build():
    # torch_default's bias holds its layer's fan-in and sparse_spectral its sparsity: both are drawn
    # anew from the run's seed when the cached model is rebuilt as a template.
    torch = {"initializer": "torch_default", "bias_initializer": "torch_default"}
    cases = [
        (RunConfig(name="t", model={"name": "mlp", "hidden": [8], **torch}), DIGITS),
        (
            RunConfig(
                name="s",
                dataset={"name": "adding_problem"},
                model={"name": "rnn", "units": 20, "recurrent_initializer": "sparse_spectral", "recurrent_nonzero": 5},
            ),
            Task("regression", (50, 2), None),
        ),
    ]
    for config, task in cases:
        forget_everything()
        configure_determinism(0)
        model_for_run(config, 3, task, 0)
        configure_determinism(5)
        reused = model_for_run(config, 3, task, 5)
        configure_determinism(5)
        fresh = compiled_model(config, 3, task, 5)
        for a, b in zip(reused.get_weights(), fresh.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    forget_everything()
