"""Keras 3.15's trainer tests (trainers/trainer_test.py) through `stabilize(model, None, "propagate")`.

Each case is Keras's, run on the plain model and on its wrapped twin from one seed (`keras_twins`):
history, `evaluate`, `predict`, the `*_on_batch` results, the weights and the optimizer state must be
equal bit for bit, and where Keras asserts numbers the twin meets them too. Keras's test models mix
`Trainer` into a layer; `stabilize` wraps a `keras.Model`, so they are written as small Model
subclasses with the same layers and initializers.
"""

import inspect
import warnings

import keras
import numpy as np
import pytest
from keras_twins import MODES, ON_BATCH_RESETS_METRICS, ON_BATCH_RETURNS_FLOATS, twins

import keras_stability as ks
from keras_stability.optimizer import StabilizedOptimizer


class ExampleModel(keras.Model):
    """Keras's `ExampleModel`: one Dense(units), ones kernel, no bias."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(units, use_bias=False, kernel_initializer="ones")

    def call(self, x):
        return self.dense(x)


class TrainingTestingLayer(keras.Model):
    """Keras's `TrainingTestingLayer`: the identity in training, zero otherwise, no weights."""

    def call(self, x, training=False):
        return x if training else x * 0


class StructModel(keras.Model):
    def __init__(self, units):
        super().__init__()
        self.dense_1 = keras.layers.Dense(units, use_bias=False, kernel_initializer="ones")
        self.dense_2 = keras.layers.Dense(units, use_bias=False, kernel_initializer="ones")

    def call(self, x):
        return {"y_one": self.dense_1(x["x_one"]), "y_two": self.dense_2(x["x_two"])}


class ListOutputModel(keras.Model):
    def __init__(self, units):
        super().__init__()
        self.dense_1 = keras.layers.Dense(units, use_bias=False, kernel_initializer="ones")
        self.dense_2 = keras.layers.Dense(units, use_bias=False, kernel_initializer="ones")

    def call(self, x):
        return [self.dense_1(x), self.dense_2(x)]


def compile_example(model, mode, **kwargs):
    model.compile(
        optimizer=keras.optimizers.SGD(),
        loss=keras.losses.MeanSquaredError(),
        metrics=[keras.metrics.MeanSquaredError()],
        **MODES[mode],
        **kwargs,
    )


@pytest.mark.parametrize("steps_per_epoch", [None, 7])
@pytest.mark.parametrize("mode", list(MODES))
def test_fit_flow(mode, steps_per_epoch):
    x, y = np.ones((100, 4)), np.zeros((100, 3))

    def exercise(model):
        compile_example(model, mode)
        history = model.fit(x, y, batch_size=20, steps_per_epoch=steps_per_epoch, epochs=3, verbose=0)
        return history.history, model.evaluate(x, y, verbose=0), model.predict(x, verbose=0)

    *_, (history, _, _) = twins(lambda: ExampleModel(units=3), exercise)
    np.testing.assert_allclose(history["mean_squared_error"], [14.5, 11.5, 8.5], atol=1.0)


@pytest.mark.parametrize("steps_per_epoch", [None, 7])
@pytest.mark.parametrize("mode", list(MODES))
def test_fit_with_val_split(mode, steps_per_epoch):
    x, y = np.ones((100, 4)), np.zeros((100, 3))

    def exercise(model):
        compile_example(model, mode)
        fit = {"batch_size": 20, "steps_per_epoch": steps_per_epoch, "epochs": 3, "validation_split": 0.2}
        first = model.fit(x, y, verbose=0, **fit).history
        second = model.fit(keras.ops.ones((100, 4)), keras.ops.zeros((100, 3)), verbose=0, **fit).history
        return first, second

    *_, (first, _) = twins(lambda: ExampleModel(units=3), exercise)
    assert "val_loss" in first


def py_dataset():
    class Ones(keras.utils.PyDataset):
        def __len__(self):
            return 20

        def __getitem__(self, idx):
            return np.ones((5, 4)), np.zeros((5, 3))

    return Ones(), None


DATA = {
    "np_array": (lambda: (np.ones((100, 4)), np.zeros((100, 3))), {"batch_size": 5}),
    "native_array": (lambda: (keras.ops.ones((100, 4)), keras.ops.zeros((100, 3))), {"batch_size": 5}),
    "py_dataset": (py_dataset, {}),
    "py_dataset_cw": (py_dataset, {"class_weight": {0: 1, 1: 2}}),
    "generator": (lambda: (((np.ones((5, 4)), np.zeros((5, 3))) for _ in range(20)), None), {}),
}


@pytest.mark.parametrize("data", list(DATA))
def test_fit_with_data_adapter(data):
    make, fit_kwargs = DATA[data]

    def exercise(model):
        model.compile(
            optimizer=keras.optimizers.Adagrad(),
            loss=keras.losses.MeanSquaredError(),
            metrics=[keras.metrics.MeanSquaredError()],
            jit_compile=True,
        )
        x, y = make()
        return model.fit(x, y, epochs=3 if data != "generator" else 1, verbose=0, **fit_kwargs).history

    twins(lambda: ExampleModel(units=3), exercise)


@pytest.mark.parametrize("mode", list(MODES))
def test_evaluate_flow(mode):
    x, y = np.ones((100, 4)), np.zeros((100, 3))

    def exercise(model):
        compile_example(model, mode)
        return model.evaluate(x, y, batch_size=16, verbose=0), model.evaluate(x, y, batch_size=16, return_dict=True)

    *_, (listed, logs) = twins(lambda: ExampleModel(units=3), exercise)
    np.testing.assert_allclose(listed, [16.0, 16.0])
    np.testing.assert_allclose(logs["mean_squared_error"], 16.0)


@pytest.mark.parametrize("mode", list(MODES))
def test_predict_flow(mode):
    def exercise(model):
        compile_example(model, mode)
        return model.predict(np.ones((100, 4)), batch_size=16, verbose=0)

    *_, outputs = twins(lambda: ExampleModel(units=3), exercise)
    np.testing.assert_allclose(outputs, 4 * np.ones((100, 3)))


@pytest.mark.parametrize("mode", list(MODES))
def test_on_batch_methods(mode):
    x, y = np.ones((100, 4)), np.zeros((100, 3))
    sw = np.arange(100).reshape((100,)).astype("float32") / 50.0

    def exercise(model):
        compile_example(model, mode)
        return [
            model.train_on_batch(x, y),
            model.train_on_batch(x, y, return_dict=True),
            model.test_on_batch(x, y),
            model.test_on_batch(x, y, return_dict=True),
            model.predict_on_batch(x),
            model.train_on_batch(x, y, sw),
            model.test_on_batch(x, y, sw),
            model.predict_on_batch(x),
            model.train_on_batch(x, y, class_weight={1: 0.3, 0: 0.2}),
        ]

    *_, logs = twins(lambda: ExampleModel(units=3), exercise)
    assert isinstance(logs[0], list) and len(logs[0]) == 2  # loss and mse: the telemetry is not listed
    np.testing.assert_allclose(logs[0][0], 16.0, rtol=1e-6)
    assert sorted(logs[1]) == sorted(["loss", "mean_squared_error", *ks.model.TELEMETRY])
    if not ON_BATCH_RESETS_METRICS:
        return  # Keras 3.15's numbers below need each call's own metrics; the twins agreed above
    np.testing.assert_allclose(logs[1]["loss"], 15.158, atol=1e-3)
    np.testing.assert_allclose(logs[2][0], 14.360, atol=1e-3)
    assert len(logs[3]) == 2
    np.testing.assert_allclose(logs[4][0], [3.789511] * 3, rtol=1e-6)
    np.testing.assert_allclose(logs[5][0], 14.217, atol=1e-3)
    np.testing.assert_allclose(logs[6][0], 13.476, atol=1e-3)
    np.testing.assert_allclose(logs[7][0], [3.689468] * 3, rtol=1e-6)
    np.testing.assert_allclose(logs[8][0], 2.722, atol=1e-3)


@pytest.mark.parametrize("mode", list(MODES))
def test_on_batch_methods_without_training(mode):
    x, y = np.ones((100, 4)), np.zeros((100, 3))

    def exercise(model):
        model.compile(loss="mse", metrics=[keras.metrics.MeanSquaredError()], **MODES[mode])
        return model.predict_on_batch(x), model.test_on_batch(x, y), model.test_on_batch(x, y, return_dict=True)

    *_, (output, listed, logs) = twins(lambda: ExampleModel(units=3), exercise)
    np.testing.assert_allclose(output[0], [4.0, 4.0, 4.0])
    assert listed == [16.0, 16.0] and logs == {"loss": 16.0, "mean_squared_error": 16.0}


def test_loss_only_train_on_batch_returns_a_float():
    # Keras's contract: with only the loss, `train_on_batch` returns a float, not a list.
    def exercise(model):
        model.compile(optimizer="sgd", loss="mse")
        return model.train_on_batch(np.ones((8, 4)), np.zeros((8, 3)))

    *_, loss = twins(lambda: ExampleModel(units=3), exercise)
    assert isinstance(loss, float if ON_BATCH_RETURNS_FLOATS else np.ndarray)


@pytest.mark.parametrize(
    "dtype, auto_scale_loss, scaled",
    [("mixed_float16", True, True), ("mixed_float16", False, False), ("mixed_bfloat16", True, False)],
)
def test_adds_loss_scaling_optimizer(dtype, auto_scale_loss, scaled):
    # The policy is the model's own (`dtype=`), not the global one; the model has no weights.
    def exercise(model):
        model.compile(optimizer="rmsprop", loss="mse", auto_scale_loss=auto_scale_loss)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = model.fit(np.ones((128, 1)), np.zeros((128, 1)), batch_size=32, verbose=0).history
        assert any("does not have any trainable weights" in str(w.message) for w in caught)
        return history

    plain, _, wrapped, _ = twins(lambda: TrainingTestingLayer(dtype=dtype), exercise)
    assert isinstance(wrapped.optimizer, StabilizedOptimizer)
    assert isinstance(wrapped.optimizer.inner_optimizer, keras.optimizers.LossScaleOptimizer) is scaled
    assert isinstance(plain.optimizer, keras.optimizers.LossScaleOptimizer) is scaled


class DeepModel(keras.Model):
    """Keras's underflow model: 15 sigmoid Dense(1) layers, the model's own policy mixed_float16."""

    def __init__(self):
        super().__init__(dtype="mixed_float16")
        self.stack = [
            keras.layers.Dense(
                1, use_bias=False, kernel_initializer="ones", activation="sigmoid", dtype="mixed_float16"
            )
            for _ in range(15)
        ]

    def call(self, x):
        for layer in self.stack:
            x = layer(x)
        return x


@pytest.mark.parametrize("auto_scale_loss", [False, True])
def test_loss_scaling_prevents_underflow(auto_scale_loss):
    def exercise(model):
        model.compile(keras.optimizers.SGD(learning_rate=1e9), loss="mse", auto_scale_loss=auto_scale_loss)
        return model.fit(np.ones((1, 1)), np.ones((1, 1)), batch_size=1, verbose=0).history

    plain, *_ = twins(DeepModel, exercise)
    first_kernel = plain.stack[0].kernel.numpy()
    # Without loss scaling the first Dense does not update; with it, it does (twin equal, above).
    assert np.array_equal(first_kernel, np.ones_like(first_kernel)) is not auto_scale_loss


def test_training_arg():
    x, y = np.ones((128, 1)), np.zeros((128, 1))

    def exercise(model):
        model.compile(optimizer="rmsprop", loss="mse")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            history = model.fit(x, y, batch_size=32, verbose=0).history
        return history, model.evaluate(x, y, batch_size=32, verbose=0), model.predict(x, verbose=0)

    *_, (history, val_loss, preds) = twins(TrainingTestingLayer, exercise)
    assert history["loss"] == [1.0] and val_loss == 0.0
    np.testing.assert_array_equal(preds, np.zeros((128, 1)))


def test_internal_only_loss():
    class LossLayer(keras.layers.Layer):
        def call(self, x):
            self.add_loss(keras.ops.sum(x))
            return x

    def exercise(model):
        model.compile(optimizer="adam")
        return model.fit(np.ones((16, 2)), np.zeros((16, 1)), batch_size=4, verbose=0).history

    twins(lambda: keras.Sequential([keras.layers.Dense(2), LossLayer(), keras.layers.Dense(1)]), exercise)


def test_compile_has_keras_signature():
    # `compile("sgd", "mse")`: the second positional argument is the loss, as in Keras.
    ours = inspect.signature(ks.StabilizedModel.compile)
    assert ours == inspect.signature(keras.Model.compile)

    def exercise(model):
        model.compile("sgd", "mse", None, ["mae"])
        return model.fit(np.ones((8, 4)), np.zeros((8, 3)), batch_size=4, verbose=0).history

    twins(lambda: ExampleModel(units=3), exercise)


X40, Y40 = np.ones((40, 4)), np.zeros((40, 3))
LOSS_WEIGHTS = {
    "single": (ExampleModel, 0.2, X40, Y40, [3.182979, 3.115617, 3.049681]),
    "dict": (
        StructModel,
        {"y_one": 0.1, "y_two": 0.2},
        {"x_one": X40, "x_two": X40},
        {"y_one": Y40, "y_two": Y40},
        [4.778718, 4.694403, 4.611693],
    ),
    "list": (ListOutputModel, [0.1, 0.2], X40, [Y40, Y40], [4.778718, 4.694403, 4.611693]),
}


@pytest.mark.parametrize("case", list(LOSS_WEIGHTS))
def test_loss_weights(case):
    build, loss_weights, inputs, targets, expected = LOSS_WEIGHTS[case]

    def per_output(make):
        return [make()] if case == "single" else keras.tree.map_structure(lambda _: make(), loss_weights)

    def exercise(model):
        model.compile(
            optimizer=keras.optimizers.SGD(),
            loss=per_output(keras.losses.MeanSquaredError) if case != "single" else keras.losses.MeanSquaredError(),
            metrics=per_output(keras.metrics.MeanSquaredError),
            loss_weights=loss_weights,
        )
        return model.fit(inputs, targets, batch_size=20, epochs=3, verbose=0).history

    *_, history = twins(lambda: build(units=3), exercise)
    np.testing.assert_allclose(history["loss"], expected, atol=1e-3)
