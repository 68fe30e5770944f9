"""Keras 3.15's callback tests (callbacks/*_test.py) that train, through `stabilize(model)`.

Each case runs on the plain model and on its wrapped twin from one seed (`keras_twins`), each with
its own files, and meets Keras's assertions. `BackupAndRestore` and `load_weights` need a built
model: the wrapper is built as soon as the model it wraps is.
"""

import itertools

import keras
import numpy as np
import pytest
from keras_twins import assert_same, twins

import keras_stability as ks

RNG = np.random.default_rng(1337)


class InterruptingCallback(keras.callbacks.Callback):
    """backup_and_restore_test.py's: raises after `steps_int` batches or `epoch_int` epochs."""

    def __init__(self, steps_int, epoch_int):
        super().__init__()
        self.batch_count, self.epoch_count = 0, 0
        self.steps_int, self.epoch_int = steps_int, epoch_int

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_count += 1
        if self.epoch_count == self.epoch_int:
            raise RuntimeError("EpochInterruption")

    def on_batch_end(self, batch, logs=None):
        self.batch_count += 1
        if self.batch_count == self.steps_int:
            raise RuntimeError("StepsInterruption")


class CanaryLayer(keras.layers.Layer):
    def __init__(self):
        super().__init__()
        self.counter = self.add_weight(shape=(), initializer="zeros", dtype="float32", trainable=False)

    def call(self, x):
        self.counter.assign_add(1)
        return x


def canary_model():
    return keras.Sequential([keras.layers.Input((3,)), CanaryLayer(), keras.layers.Dense(1)])


def per_twin(tmp_path):
    """A fresh directory for each twin's files."""
    return (tmp_path / f"run{i}" for i in itertools.count())


@pytest.mark.parametrize(
    "save_freq, interrupt, counters",
    [(1, {"steps_int": 2, "epoch_int": None}, (2, 17)), ("epoch", {"steps_int": None, "epoch_int": 2}, (6, 15))],
    ids=["best_case_step", "best_case_epoch"],
)
def test_backup_and_restore(tmp_path, save_freq, interrupt, counters):
    x, y = RNG.random((10, 3)), RNG.random((10, 1))
    dirs = per_twin(tmp_path)

    def exercise(model):
        model.compile(loss="mse", optimizer="sgd", metrics=["mse"])
        backup = keras.callbacks.BackupAndRestore(str(next(dirs)), save_freq=save_freq)
        with pytest.raises(RuntimeError):
            model.fit(x, y, batch_size=4, epochs=6, verbose=0, callbacks=[backup, InterruptingCallback(**interrupt)])
        canary = (model.model if isinstance(model, ks.StabilizedModel) else model).layers[0]
        interrupted = int(canary.counter.value)
        history = model.fit(x, y, batch_size=4, callbacks=[backup], epochs=5, verbose=0)
        return interrupted, backup._current_epoch, history.epoch, history.history

    plain, (interrupted, current_epoch, epochs, _), wrapped, _ = twins(canary_model, exercise)
    assert interrupted == counters[0] and current_epoch == 5 and epochs[-1] == 4
    assert int(plain.layers[0].counter.value) == int(wrapped.model.layers[0].counter.value) == counters[1]


def checkpoint_model():
    """model_checkpoint_test.py's `get_model`, compiled by the case."""
    inputs = keras.layers.Input(shape=(3,), batch_size=5)
    hidden = keras.layers.Dense(5, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))


@pytest.mark.parametrize("filename", ["checkpoint.model.keras", "checkpoint.weights.h5"])
def test_model_checkpoint_loading(tmp_path, filename):
    x_train, x_test = RNG.random((30, 3)), RNG.random((30, 3))
    y_train, y_test = (keras.utils.to_categorical(RNG.integers(0, 3, 30), 3) for _ in range(2))
    dirs = per_twin(tmp_path)

    def exercise(model):
        path = next(dirs) / filename
        model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=[keras.metrics.Accuracy("acc")])
        checkpoint = keras.callbacks.ModelCheckpoint(
            str(path), monitor="val_loss", save_best_only=True, save_weights_only=filename.endswith(".h5")
        )
        history = model.fit(
            x_train,
            y_train,
            batch_size=5,
            validation_data=(x_test, y_test),
            callbacks=[checkpoint],
            epochs=1,
            verbose=0,
        )
        if filename.endswith(".keras"):
            reloaded = keras.saving.load_model(str(path))
        else:
            # A fresh model that has never been fit: built because the model it wraps is built.
            reloaded = checkpoint_model()
            if isinstance(model, ks.StabilizedModel):
                reloaded = ks.stabilize(reloaded, None, nonfinite="propagate")
            reloaded.load_weights(str(path))
        assert_same(model.get_weights(), reloaded.get_weights())
        return history.history, reloaded.predict(x_test, verbose=0)

    twins(checkpoint_model, exercise)


def test_early_stopping_reuse():
    data = RNG.random((100, 1))
    labels = np.where(data > 0.5, 1, 0)

    def exercise(model):
        model.compile(optimizer="sgd", loss="mae", metrics=["mse"])
        stopper = keras.callbacks.EarlyStopping(monitor="mse", patience=3)
        first = model.fit(data, labels, callbacks=[stopper], verbose=0, epochs=8)
        second = model.fit(data, labels, callbacks=[stopper], verbose=0, epochs=8)
        return first.epoch, first.history, second.epoch, second.history

    *_, (first, _, second, _) = twins(
        lambda: keras.Sequential([keras.layers.Dense(1, activation="relu"), keras.layers.Dense(1, activation="relu")]),
        exercise,
    )
    assert len(first) >= 3 and len(second) >= 3


def small_classifier():
    return keras.Sequential([keras.layers.Dense(5), keras.layers.Dense(2)])


def classification_data():
    x = RNG.random((10, 3))
    return x, keras.utils.to_categorical(RNG.integers(0, 2, 10), 2)


def test_reduces_lr_with_model_fit():
    (x_train, y_train), (x_test, y_test) = classification_data(), classification_data()

    def exercise(model):
        model.compile(loss="mse", optimizer=keras.optimizers.Adam(0.1))
        reduce_lr = keras.callbacks.ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100)
        history = model.fit(
            x_train, y_train, validation_data=(x_test, y_test), callbacks=[reduce_lr], epochs=2, verbose=0
        )
        return history.history, float(model.optimizer.learning_rate.value)

    *_, (_, learning_rate) = twins(small_classifier, exercise)
    np.testing.assert_allclose(learning_rate, 0.01, rtol=1e-6)


@pytest.mark.parametrize(
    "schedule, expected", [(lambda step: 1.0 / (2.0 + step), 0.5), (lambda step, lr: 0.5, 0.5)], ids=["step", "step_lr"]
)
def test_learning_rate_scheduler(schedule, expected):
    x_train, y_train = classification_data()

    def exercise(model):
        model.compile(loss="mse", optimizer="sgd")
        scheduler = keras.callbacks.LearningRateScheduler(schedule)
        history = model.fit(x_train, y_train, callbacks=[scheduler], epochs=1, verbose=0)
        return history.history, float(model.optimizer.learning_rate.value)

    *_, (history, learning_rate) = twins(small_classifier, exercise)
    assert learning_rate == expected and history["learning_rate"] == [expected]  # test_learning_rate_in_history


def test_terminate_on_nan():
    x_train, x_test = RNG.random((10, 3)), RNG.random((10, 3))
    y_train, y_test = (keras.utils.to_categorical(RNG.integers(0, 2, 10), 2) for _ in range(2))

    def build():
        huge = keras.initializers.Constant(1e5)
        return keras.Sequential(
            [keras.layers.Dense(2, "relu", kernel_initializer=huge) for _ in range(5)] + [keras.layers.Dense(2)]
        )

    def exercise(model):
        model.compile(loss="mean_squared_error", optimizer="sgd")
        history = model.fit(
            x_train,
            y_train,
            batch_size=4,
            validation_data=(x_test, y_test),
            callbacks=[keras.callbacks.TerminateOnNaN()],
            epochs=20,
            verbose=0,
        )
        return history.history

    *_, history = twins(build, exercise)
    assert len(history["loss"]) == 1 and not np.isfinite(history["loss"][0])
