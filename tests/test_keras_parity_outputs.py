"""Keras 3.15's multi-output and `compute_loss` tests through `stabilize(model, None, "propagate")`.

From models/model_test.py (losses and metrics matched to outputs by `output_names`, and the errors
for keys that match none) and trainers/trainer_test.py (`compute_loss` overrides, recompiling,
metric order, constraints, nested inputs). Each case runs on the plain model and on its wrapped twin
from one seed (`keras_twins`); history keys are Keras's expected ones.
"""

import keras
import numpy as np
import pytest
from keras_twins import INVALID_METRICS_KEY, twins, untracked

from keras_stability.model import TELEMETRY

RNG = np.random.default_rng(0)
X = RNG.random((8, 3))
Y1 = RNG.random((8, 1))
Y2 = RNG.integers(0, 2, (8, 1)).astype("float64")


def functional(outputs="list", names=True):
    """model_test.py's functional models: Dense(1) `output_a`, sigmoid Dense(1) `output_b`."""
    x = keras.Input(shape=(3,), name="input_a")
    a = keras.layers.Dense(1, name="output_a" if names else None)(x)
    if outputs == "single":
        return keras.Model(x, a)
    if outputs == "single_list":
        return keras.Model(x, [a])
    if outputs == "single_dict":
        return keras.Model(x, {"output_a": a})
    if outputs == "dict_single_tensor":
        return keras.Model(x, {"output_a": a, "output_b": a})
    b = keras.layers.Dense(1, name="output_b" if names else None, activation="sigmoid")(x)
    return keras.Model(x, {"output_a": a, "output_b": b} if outputs == "dict" else [a, b])


def fit_keys(build, targets=(Y1, Y2), **compile_kwargs):
    def exercise(model):
        model.compile(optimizer="sgd", **compile_kwargs)
        history = model.fit(X, targets, batch_size=2, epochs=1, verbose=0).history
        return history, model.evaluate(X, targets, verbose=0, return_dict=True), model.predict(X, verbose=0)

    *_, (history, _, _) = twins(build, exercise)
    return sorted(k for k in history if k not in TELEMETRY)


PER_OUTPUT = ["mean_squared_error", ["mean_squared_error", "accuracy"]]
DICT_METRICS = {"output_a": ["mean_squared_error"], "output_b": ["mean_squared_error", "accuracy"]}
FULL = ["loss", "output_a_loss", "output_a_mean_squared_error", "output_b_accuracy", "output_b_loss"]
FULL += ["output_b_mean_squared_error"]
WEIGHTED = ["output_a_weighted_mean_squared_error", "output_b_weighted_accuracy"]
WEIGHTED += ["output_b_weighted_mean_squared_error"]
TWO_LOSSES = {"output_a": "mean_squared_error", "output_b": "binary_crossentropy"}

# name: (model, compile arguments, Keras's history keys), all from model_test.py but the last.
CASES = {
    "list_outputs_list_losses": (
        "list",
        {"loss": ["mean_squared_error", "binary_crossentropy"], "metrics": PER_OUTPUT, "loss_weights": [0.1, 2]},
        FULL,
    ),
    "list_outputs_list_losses_abbr": (
        "list",
        {"loss": ["mse", "bce"], "metrics": [["bce", "mse", "mae"], ["mse", "acc"]], "loss_weights": [0.1, 2]},
        ["loss", "output_a_bce", "output_a_loss", "output_a_mae", "output_a_mse", "output_b_acc", "output_b_loss"]
        + ["output_b_mse"],
    ),
    "list_outputs_nested_list_losses": (
        "list",
        {"loss": ["mean_squared_error", ["binary_crossentropy"]], "metrics": PER_OUTPUT, "loss_weights": [0.1, 2]},
        FULL,
    ),
    "dict_outputs_dict_losses": (
        "dict",
        {
            "loss": {"output_a": "mean_squared_error", "output_b": ["binary_crossentropy"]},
            "metrics": DICT_METRICS,
            "weighted_metrics": DICT_METRICS,
        },
        FULL + WEIGHTED,
    ),
    "list_outputs_dict_losses_metrics": (
        "list",
        {"loss": TWO_LOSSES, "metrics": DICT_METRICS, "weighted_metrics": DICT_METRICS},
        FULL + WEIGHTED,
    ),
    "list_outputs_dict_losses_metrics_uniq_weighted": (
        "list",
        {
            "loss": TWO_LOSSES,
            "metrics": {"output_a": ["mean_squared_error"], "output_b": ["mean_squared_error"]},
            "weighted_metrics": {"output_a": ["mean_squared_error"], "output_b": ["accuracy"]},
        },
        FULL + ["output_a_weighted_mean_squared_error"],
    ),
    "list_outputs_dict_losses_partial_metrics": (
        "list",
        {"loss": TWO_LOSSES, "metrics": {"output_b": ["mean_squared_error", "accuracy"]}},
        ["loss", "output_a_loss", "output_b_accuracy", "output_b_loss", "output_b_mean_squared_error"],
    ),
    "dict_outputs_with_single_tensor": (
        "dict_single_tensor",
        {"loss": TWO_LOSSES},
        FULL[:1] + FULL[1:2] + ["output_b_loss"],
    ),
    "list_outputs_invalid_nested_list_losses": (
        "list",
        {"loss": ["mean_squared_error", ["mean_squared_error", "binary_crossentropy"]]},
        ["loss", "output_a_loss", "output_b_loss"],
    ),
    # The repro: outputs `output_a` and `output_b` with one loss each, by dict or by list,
    # and the same loss for both: one loss key per output.
    "list_outputs_dict_same_loss": (
        "list",
        {"loss": {"output_a": "mse", "output_b": "mse"}},
        ["loss", "output_a_loss", "output_b_loss"],
    ),
    "list_outputs_list_same_loss": ("list", {"loss": ["mse", "mse"]}, ["loss", "output_a_loss", "output_b_loss"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_functional_outputs(case):
    outputs, compile_kwargs, expected = CASES[case]
    targets = {"output_a": Y1, "output_b": Y2} if outputs == "dict" else (Y1, Y2)
    assert fit_keys(lambda: functional(outputs), targets, **compile_kwargs) == sorted(expected)


@pytest.mark.parametrize("outputs", ["single", "single_list", "single_dict"])
@pytest.mark.parametrize("loss_type", [None, "list", "dict", "dict_list"])
def test_functional_single_output(outputs, loss_type):
    loss = "mean_squared_error"
    loss = {None: loss, "list": [loss], "dict": {"output_a": loss}, "dict_list": {"output_a": [loss]}}[loss_type]
    keys = fit_keys(
        lambda: functional(outputs),
        Y1,
        loss=loss,
        metrics={"output_a": ["mean_squared_error", "mean_absolute_error"]},
        weighted_metrics={"output_a": "mean_squared_error"},
    )
    assert keys == ["loss", "mean_absolute_error", "mean_squared_error", "weighted_mean_squared_error"]


# name: (model, output names, compile arguments, Keras's exception and message).
ERRORS = {
    "list_outputs_dict_losses_invalid_keys": (
        "list",
        True,
        {"loss": {"output_a": "mean_squared_error", "output_c": "binary_crossentropy"}},
        ValueError,
        "Expected keys",
    ),
    "list_outputs_dict_losses_no_output_names": (
        "list",
        False,
        {"loss": {"output_a": "mean_squared_error"}},
        ValueError,
        "Expected keys",
    ),
    "list_outputs_dict_metrics_invalid_keys": (
        "list",
        True,
        {"loss": TWO_LOSSES, "metrics": {"output_c": ["mean_squared_error", "accuracy"]}},
        ValueError,
        INVALID_METRICS_KEY + "output_c",
    ),
    "dict_outputs_dict_losses_invalid_keys": (
        "dict",
        True,
        {"loss": {"output_a": "mean_squared_error", "output_c": "binary_crossentropy"}},
        KeyError,
        "in the `loss` argument, can't be found in either the model's output",
    ),
    "dict_outputs_dict_metrics_invalid_keys": (
        "dict",
        True,
        {"loss": TWO_LOSSES, "metrics": {"output_c": ["mean_squared_error", "accuracy"]}},
        ValueError,
        INVALID_METRICS_KEY + "output_c",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_functional_outputs_invalid_keys(case):
    outputs, names, compile_kwargs, error, message = ERRORS[case]

    def exercise(model):
        model.compile(optimizer="sgd", **compile_kwargs)
        with pytest.raises(error, match=message) as raised:
            model.fit(X, (Y1, Y2), batch_size=2, epochs=1, verbose=0)
        return untracked(str(raised.value))

    twins(lambda: functional(outputs, names), exercise)


class SplitOutput(keras.Model):
    """model_test.py's model with one output that its `compute_loss` splits into two."""

    def __init__(self):
        inputs = keras.Input(shape=(3,), name="inputs")
        super().__init__(inputs=inputs, outputs=keras.layers.Dense(1, name="a")(inputs))

    def compute_loss(self, x, y, y_pred, sample_weight=None, **kwargs):
        return super().compute_loss(x=x, y=y, y_pred=[y_pred, y_pred], sample_weight=sample_weight, **kwargs)


def test_functional_list_outputs_with_custom_compute_loss():
    keys = fit_keys(SplitOutput, loss=["mean_squared_error", "binary_crossentropy"])
    assert keys == ["binary_crossentropy_loss", "loss", "mean_squared_error_loss"]


def custom_loss_model(update, factor=1.0, regularizer=None, training_arg=True):
    """trainer_test.py's `MyModel`: Dense(2), a `custom` Mean updated by its `compute_loss`."""

    class MyModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.custom_metric = keras.metrics.Mean(name="custom")
            self.dense = keras.layers.Dense(2, activity_regularizer=regularizer)

        def call(self, x):
            return self.dense(x)

        def loss_and_metric(self, loss):
            self.custom_metric.update_state(update(self, loss))
            return loss * factor

    if training_arg:

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return self.loss_and_metric(super(MyModel, self).compute_loss(x, y, y_pred, sample_weight, training))
    else:

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
            return self.loss_and_metric(super(MyModel, self).compute_loss(x, y, y_pred, sample_weight))

    MyModel.compute_loss = compute_loss
    return MyModel()


CUSTOM = {
    "metric_update_in_compute_loss": ({"update": lambda m, loss: loss * 4}, 4.0),
    "fwd_pass_loss_presence_in_compute_loss": ({"update": lambda m, loss: sum(m.losses), "regularizer": "l2"}, None),
    "compute_loss_no_training_backwards_compatibility": (
        {"update": lambda m, loss: loss * 4, "regularizer": "l2", "training_arg": False},
        4.0,
    ),
    # The repro: an override that doubles the loss trains on the doubled loss.
    "compute_loss_doubles_the_loss": ({"update": lambda m, loss: loss, "factor": 2.0}, 0.5),
}


@pytest.mark.parametrize("case", list(CUSTOM))
def test_custom_compute_loss(case):
    arguments, ratio = CUSTOM[case]
    x, y = np.ones((32, 4)), np.ones((32, 2)) * 2

    def exercise(model):
        model.compile(optimizer="sgd", loss="mse")
        evaluated = model.evaluate(x, y, return_dict=True, verbose=0)  # test_evaluate_with_custom_compute_loss
        return evaluated, model.fit(x, y, verbose=0).history

    *_, (evaluated, history) = twins(lambda: custom_loss_model(**arguments), exercise)
    assert history["custom"][0] > 0.0
    if ratio is not None:
        np.testing.assert_allclose(history["custom"][0], history["loss"][0] * ratio, rtol=1e-5)
        np.testing.assert_allclose(evaluated["custom"], evaluated["loss"] * ratio, rtol=1e-5)


class ExampleModel(keras.Model):
    def __init__(self, units=3):
        super().__init__()
        self.dense = keras.layers.Dense(units, use_bias=False, kernel_initializer="ones")

    def call(self, x):
        return self.dense(x)


def test_recompile():
    x, y = np.ones((3, 2)), np.ones((3, 3))

    def exercise(model):
        results = []
        for metric in ("mean_squared_error", "mean_absolute_error"):
            model.compile(optimizer="sgd", loss="mse", metrics=[metric])
            results += [model.fit(x, y, verbose=0).history, model.evaluate(x, y, return_dict=True, verbose=0)]
        return results

    *_, results = twins(ExampleModel, exercise)
    assert sorted(results[3]) == ["loss", "mean_absolute_error"]


def test_evaluate_return_list_respect_metrics_order():
    def zero(y_true, y_pred):
        return 0.0

    def one(y_true, y_pred):
        return 1.0

    def exercise(model):
        results = []
        for metrics in ([zero, one], [one, zero]):
            model.compile(optimizer="sgd", loss="mse", metrics=metrics)
            results.append(model.evaluate(np.ones((3, 2)), np.ones((3, 3)), verbose=0))
        return results

    *_, (first, second) = twins(ExampleModel, exercise)
    assert first[1:] == [0.0, 1.0] and second[1:] == [1.0, 0.0]


def test_constraints_are_applied():
    def exercise(model):
        model.compile(optimizer="rmsprop", loss="mse")
        return model.fit(np.ones((2, 3)), np.ones((2, 2)), verbose=0).history

    plain, *_ = twins(lambda: keras.Sequential([keras.layers.Dense(2, kernel_constraint="non_neg")]), exercise)
    assert np.min(plain.layers[0].kernel.numpy()) >= 0.0


class ListInputModel(keras.Model):
    def __init__(self, units=2):
        super().__init__()
        self.dense_1 = keras.layers.Dense(units, use_bias=False, kernel_initializer="ones")
        self.dense_2 = keras.layers.Dense(units, use_bias=False, kernel_initializer="ones")

    def call(self, x):
        return self.dense_1(x[0]) + self.dense_2(x[1])


def test_nested_inputs():
    x, y = [np.ones((3, 2)), np.ones((3, 3))], np.ones((3, 2))

    def exercise(model):
        model.compile(optimizer="sgd", loss="mse", metrics=["mse"])
        history = model.fit(x, y, verbose=0).history
        return history, model.train_on_batch(x, y), model.evaluate(x, y, verbose=0), model.test_on_batch(x, y)

    *_, (history, trained, evaluated, _) = twins(ListInputModel, exercise)
    np.testing.assert_allclose(history["loss"], [16.0], rtol=1e-6)
    np.testing.assert_allclose(trained[0], 14.44, atol=1e-2)
    np.testing.assert_allclose(evaluated[0], 13.0321, atol=1e-3)


class OptionalInputLayer(keras.layers.Layer):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x, o=None):
        return self.dense(x if o is None else x + o)


def optional_inputs_model():
    """model_test.py's model with an optional input `o`."""
    x, o = keras.Input((2,), name="x"), keras.Input((2,), name="o", optional=True)
    return keras.Model({"x": x, "o": o}, OptionalInputLayer()(x, o))


@pytest.mark.parametrize("optional", [None, np.ones((2, 2))], ids=["optional_none", "optional_tensor"])
def test_functional_optional_inputs(optional):
    inputs, y_true = {"x": np.ones((2, 2)), "o": optional}, np.ones((2, 2))

    def exercise(model):
        model.compile(loss="mse", optimizer="adam")
        history = model.fit(x=inputs, y=y_true, verbose=0).history
        return history, model.evaluate(x=inputs, y=y_true, verbose=0), model.predict(x=inputs, verbose=0)

    twins(optional_inputs_model, exercise)
