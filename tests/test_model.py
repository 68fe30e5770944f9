"""StabilizedModel: Keras's step order, telemetry numbers, eager/graph/XLA agreement, model kinds."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stability as ks

MODES = {"eager": {"run_eagerly": True}, "graph": {}, "jit": {"jit_compile": True}}


def linear_model():
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])


def negative_product(y_true, y_pred):
    return tf.reduce_mean(-y_true * y_pred, axis=-1)


@pytest.mark.parametrize("mode", list(MODES))
def test_telemetry_numbers(mode):
    # Loss -y·w·x: with x = 1 the gradient of a batch is -mean(y). Batches y = [40, 4] → -22, then
    # [0.5, 0.5] → -0.5. Global norms 22 and 0.5; clipping at 1 changes only the first step.
    model = ks.stabilize(linear_model(), ks.clip_by_global_norm(1.0))
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=negative_product, **MODES[mode])
    x = np.ones((4, 1), np.float32)
    y = np.array([[40.0], [4.0], [0.5], [0.5]], np.float32)
    history = model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["grad_norm"], [(22.0 + 0.5) / 2], rtol=1e-6)
    np.testing.assert_allclose(history["clipped_norm"], [(1.0 + 0.5) / 2], rtol=1e-6)
    np.testing.assert_allclose(history["clip_rate"], [0.5], rtol=1e-6)
    np.testing.assert_allclose(history["nonfinite_steps"], [0.0])
    np.testing.assert_allclose(model.get_weights()[0], [[1.5]], rtol=1e-6)  # 0 + 1 + 0.5


def test_nonfinite_steps_counts_and_skips():
    model = ks.stabilize(linear_model(), ks.clip_by_global_norm(1.0), nonfinite="skip")
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=negative_product)
    x = np.ones((4, 1), np.float32)
    y = np.array([[np.nan], [np.nan], [0.5], [0.5]], np.float32)
    history = model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["nonfinite_steps"], [1.0, 2.0])
    np.testing.assert_allclose(history["grad_norm"], [0.5, 0.5], rtol=1e-6)  # NaN steps are not averaged
    np.testing.assert_allclose(model.get_weights()[0], [[1.0]], rtol=1e-6)


def classifier_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n)


def sequential():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])


def functional():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(3)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def train(build, mode, transform, seed=0, epochs=2):
    keras.utils.set_random_seed(seed)
    model = ks.stabilize(build(), transform)
    model.compile(
        optimizer=keras.optimizers.SGD(0.5, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **MODES[mode],
    )
    x, y = classifier_data()
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0).history
    return model.get_weights(), history


@pytest.mark.parametrize("build", [sequential, functional, Subclassed], ids=["sequential", "functional", "subclassed"])
def test_eager_graph_and_jit_agree(build):
    transform = ks.chain(ks.adaptive_clip(0.05), ks.zclip(warmup=3), ks.clip_by_global_norm(0.5))
    reference, reference_history = train(build, "eager", transform)
    for mode in ["graph", "jit"]:
        weights, history = train(build, mode, ks.transforms.deserialize(ks.transforms.serialize(transform)))
        for a, b in zip(reference, weights):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=mode)
        np.testing.assert_allclose(history["grad_norm"], reference_history["grad_norm"], rtol=1e-4)
    assert reference_history["clip_rate"][0] > 0


def test_matches_a_hand_written_clipped_loop():
    keras.utils.set_random_seed(3)
    model = sequential()
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    stabilized = ks.stabilize(model, ks.clip_by_global_norm(0.3))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    stabilized.compile(optimizer=keras.optimizers.SGD(0.2), loss=loss_fn)
    x, y = classifier_data()
    stabilized.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    sgd = keras.optimizers.SGD(0.2)
    for start in range(0, len(x), 32):
        with tf.GradientTape() as tape:
            loss = loss_fn(y[start : start + 32], reference(x[start : start + 32], training=True))
        gradients = tape.gradient(loss, reference.trainable_variables)
        gradients, _ = tf.clip_by_global_norm(gradients, 0.3)
        sgd.apply(gradients, reference.trainable_variables)
    for a, b in zip(stabilized.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_evaluate_reports_no_gradient_telemetry():
    model = ks.stabilize(sequential(), ks.clip_by_norm(1.0))
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = classifier_data()
    model.fit(x, y, epochs=1, verbose=0)
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == {"loss"}


def test_mixed_precision_matches_float32_and_needs_scale_loss():
    # A loss scaled by 1e-6 gives float16 activation gradients below float16's smallest subnormal
    # (6e-8); without loss scaling they flush to zero and the model does not move.
    x = np.full((8, 4), 1.0, np.float32)
    y = np.zeros((8, 1), np.float32)

    def tiny_loss(y_true, y_pred):
        return 1e-6 * tf.reduce_mean(tf.square(tf.cast(y_pred, tf.float32) - 1.0), axis=-1)

    def run(policy, model_class=ks.StabilizedModel):
        keras.config.set_dtype_policy(policy)
        keras.utils.set_random_seed(0)
        inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
        model = model_class(inner, ks.clip_by_global_norm(1e-7))
        model.compile(optimizer=keras.optimizers.SGD(1000.0), loss=tiny_loss)
        before = [w.copy() for w in model.get_weights()]
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        keras.config.set_dtype_policy("float32")
        return [after - start for after, start in zip(model.get_weights(), before)]

    class NoScaleLoss(ks.StabilizedModel):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
            gradients = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply(gradients, self.trainable_weights)
            return {"loss": loss}

    float32 = run("float32")
    mixed = run("mixed_float16")
    for a, b in zip(float32, mixed):
        np.testing.assert_allclose(a, b, rtol=2e-2, atol=1e-6)
    assert max(np.abs(d).max() for d in float32) > 1e-5
    unscaled = run("mixed_float16", NoScaleLoss)
    # Skipping scale_loss: float16 gradients underflow, what is left is divided by the loss scale
    # (2**15), and the update shrinks a thousandfold (measured: 5.8e-08 against 5.4e-05).
    assert max(np.abs(d).max() for d in unscaled) < 1e-2 * max(np.abs(d).max() for d in float32)


def test_gradient_norm_logger_writes_per_step_layer_norms(tmp_path):
    model = ks.stabilize(linear_model(), ks.clip_by_global_norm(1.0), layer_norms=True)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=negative_product)
    x = np.ones((4, 1), np.float32)
    y = np.array([[40.0], [4.0], [0.5], [0.5]], np.float32)
    path = tmp_path / "layer_norms.csv"
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=[ks.GradientNormLogger(path)])
    with open(path) as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["epoch", "batch", model.trainable_variables[0].path]
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], [22.0, 0.5], rtol=1e-6)


def test_gradient_norm_logger_needs_layer_norms(tmp_path):
    model = ks.stabilize(linear_model())
    model.compile(optimizer="sgd", loss=negative_product)
    with pytest.raises(ValueError, match=r"stabilize\(model, ..., layer_norms=True\)"):
        model.fit(np.ones((2, 1)), np.ones((2, 1)), verbose=0, callbacks=[ks.GradientNormLogger(tmp_path / "n.csv")])


def test_stabilize_refuses_non_models():
    with pytest.raises(TypeError, match=r"StabilizedModel wraps a keras.Model. Received: model='mlp'"):
        ks.stabilize("mlp")


def test_stabilized_model_saves_and_continues_identically(tmp_path):
    x, y = classifier_data()
    keras.utils.set_random_seed(0)
    model = ks.stabilize(sequential(), ks.chain(ks.zclip(warmup=2), ks.clip_by_global_norm(0.5)), nonfinite="zero")
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "stabilized.keras")
    restored = keras.models.load_model(tmp_path / "stabilized.keras")
    assert isinstance(restored, ks.StabilizedModel) and restored.nonfinite == "zero"
    first = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    second = restored.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert first == second


@pytest.mark.parametrize("mode", ["graph", "jit"])
def test_train_epoch_follows_a_recompile(mode):
    # Fine-tuning at a new learning rate: after compile(SGD(0.0)) the next epoch must not move the
    # weights (a cached epoch traced against the first compile moved them by 0.018).
    x, y = classifier_data(n=32)
    model = ks.stabilize(sequential())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, **MODES[mode])
    order = np.arange(32)
    ks.train_epoch(model, x, y, order, 16)
    before = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss, **MODES[mode])
    logs = ks.train_epoch(model, x, y, order, 16)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The new compile's metrics are the ones reported: the loss of unchanged weights, not NaN or stale.
    reference = float(loss(y, model.predict(x, verbose=0)))  # the epoch mean of two equal batches
    np.testing.assert_allclose(logs["loss"], reference, rtol=1e-5)
