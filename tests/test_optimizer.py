"""StabilizedOptimizer: Keras-style wrapper behaviour, non-finite policies, accumulation, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stability as ks
from keras_stability.optimizer import StabilizedOptimizer


def one_weight():
    return keras.Variable([0.0, 0.0], name="w")


def in_mode(optimizer, variable, mode):
    """`apply_with_stats` on `variable`, eager or traced (variables are captured, not passed)."""

    def apply(gradients):
        return optimizer.apply_with_stats(gradients, [variable])

    return apply if mode == "eager" else tf.function(apply)


def test_apply_clips_then_updates():
    w = one_weight()
    optimizer = StabilizedOptimizer(keras.optimizers.SGD(1.0), ks.clip_by_global_norm(1.0))
    stats = optimizer.apply_with_stats([tf.constant([3.0, 4.0])], [w])
    np.testing.assert_allclose(w.numpy(), [-0.6, -0.8], rtol=1e-6)
    np.testing.assert_allclose([stats.grad_norm, stats.clipped_norm], [5.0, 1.0], rtol=1e-6)
    assert bool(stats.changed) and bool(stats.finite)
    assert int(optimizer.iterations) == 1


@pytest.mark.parametrize("name", ["clipnorm", "clipvalue", "global_clipnorm"])
def test_refuses_keras_clip_arguments(name):
    transform = {"clipnorm": "clip_by_norm", "clipvalue": "clip_by_value", "global_clipnorm": "clip_by_global_norm"}
    with pytest.raises(ValueError) as error:
        StabilizedOptimizer(keras.optimizers.SGD(0.1), **{name: 1.0})
    assert str(error.value) == (
        f"StabilizedOptimizer does not take `{name}`: pass transform={transform[name]}(...) instead, which "
        f"clips after the cross-replica all-reduce. Received: {name}=1.0."
    )
    with pytest.raises(ValueError, match=f"The inner optimizer has `{name}` set"):
        StabilizedOptimizer(keras.optimizers.SGD(0.1, **{name: 1.0}))


def test_refuses_inner_arguments_and_bad_values():
    with pytest.raises(
        ValueError, match=r"does not take `learning_rate`; set it on the inner optimizer. Received: learning_rate=0.1."
    ):
        StabilizedOptimizer(keras.optimizers.SGD(0.1), learning_rate=0.1)
    with pytest.raises(TypeError, match=r"Received: inner_optimizer='sgd'"):
        StabilizedOptimizer("sgd")
    with pytest.raises(ValueError, match=r"Received: nonfinite='ignore'"):
        StabilizedOptimizer(keras.optimizers.SGD(0.1), nonfinite="ignore")
    with pytest.raises(TypeError, match=r"Received: transform=1.0"):
        StabilizedOptimizer(keras.optimizers.SGD(0.1), 1.0)
    with pytest.raises(
        ValueError,
        match=r"only nonfinite='skip' \(or 'propagate', Keras's own\) is possible. Received: nonfinite='zero'",
    ):
        StabilizedOptimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)), nonfinite="zero")


def test_config_round_trip():
    optimizer = StabilizedOptimizer(
        keras.optimizers.SGD(0.5, momentum=0.9, gradient_accumulation_steps=2),
        ks.chain(ks.adaptive_clip(0.02, exclude=["head"]), ks.zclip(warmup=5)),
        nonfinite="zero",
    )
    config = optimizer.get_config()
    restored = StabilizedOptimizer.from_config(config)
    assert restored.get_config() == config
    assert restored.core_optimizer.gradient_accumulation_steps == 2
    assert restored.inner_optimizer.get_config()["momentum"] == 0.9
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(again, StabilizedOptimizer) and again.get_config() == config


def momentum_state(optimizer):
    return [v.numpy().copy() for v in optimizer.inner_optimizer.variables]


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_skip_leaves_variables_and_slots_untouched(mode):
    w = one_weight()
    optimizer = StabilizedOptimizer(keras.optimizers.SGD(0.1, momentum=0.9), nonfinite="skip")
    optimizer.build([w])
    apply = in_mode(optimizer, w, mode)
    apply([tf.constant([1.0, 1.0])])
    weights, slots = w.numpy().copy(), momentum_state(optimizer)
    stats = apply([tf.constant([np.nan, 1.0])])
    np.testing.assert_array_equal(w.numpy(), weights)
    for before, after in zip(slots, momentum_state(optimizer)):
        np.testing.assert_array_equal(before, after)
    assert not bool(stats.finite)
    assert int(optimizer.nonfinite_steps) == 1


@pytest.mark.parametrize(
    "gradient", [[1e20, 1.0], [-np.inf, 1.0], [np.nan, np.inf]], ids=["norm-overflows", "inf", "nan"]
)
def test_a_gradient_whose_norm_overflows_float32_is_non_finite(gradient):
    # ‖[1e20, 1]‖ = 1e20 is finite, but its square is not representable, so no clipping could use
    # it (tf.clip_by_global_norm returns NaN): such a step is skipped like a NaN step.
    _, tf_norm = tf.clip_by_global_norm([tf.constant(gradient, tf.float32)], 1.0)
    assert not np.isfinite(float(tf_norm))
    w = one_weight()
    optimizer = StabilizedOptimizer(keras.optimizers.SGD(0.1), ks.clip_by_global_norm(1.0), nonfinite="skip")
    stats = optimizer.apply_with_stats([tf.constant(gradient, tf.float32)], [w])
    assert not bool(stats.finite)
    assert int(optimizer.nonfinite_steps) == 1
    np.testing.assert_array_equal(w.numpy(), [0.0, 0.0])


def test_zero_applies_a_zero_gradient():
    w = one_weight()
    optimizer = StabilizedOptimizer(keras.optimizers.SGD(0.1, momentum=0.5), nonfinite="zero")
    optimizer.apply([tf.constant([1.0, 1.0])], [w])  # velocity -0.1, w = -0.1
    optimizer.apply([tf.constant([np.inf, 1.0])], [w])  # velocity 0.5·-0.1 = -0.05, w = -0.15
    np.testing.assert_allclose(w.numpy(), [-0.15, -0.15], rtol=1e-6)
    assert int(optimizer.nonfinite_steps) == 1


def test_propagate_applies_the_nan_like_keras():
    w = one_weight()
    optimizer = StabilizedOptimizer(keras.optimizers.SGD(0.1), nonfinite="propagate")
    optimizer.apply([tf.constant([np.nan, 1.0])], [w])
    assert np.isnan(w.numpy()[0]) and np.isclose(w.numpy()[1], -0.1)


def test_raise_stops_training():
    w = one_weight()
    optimizer = StabilizedOptimizer(keras.optimizers.SGD(0.1), nonfinite="raise")
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite gradient with nonfinite='raise'"):
        optimizer.apply([tf.constant([np.nan, 1.0])], [w])
    np.testing.assert_array_equal(w.numpy(), [0.0, 0.0])


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_accumulation_transforms_the_averaged_gradient_once(mode):
    w = one_weight()
    optimizer = StabilizedOptimizer(
        keras.optimizers.SGD(1.0, gradient_accumulation_steps=2), ks.clip_by_global_norm(1.0)
    )
    optimizer.build([w])
    apply = in_mode(optimizer, w, mode)
    first = apply([tf.constant([6.0, 0.0])])
    np.testing.assert_array_equal(w.numpy(), [0.0, 0.0])
    assert not bool(first.updated)
    second = apply([tf.constant([0.0, 8.0])])
    # Average [3, 4] has norm 5 → clipped to [0.6, 0.8]. Clipping each micro-batch would give [0.5, 0.5].
    np.testing.assert_allclose(w.numpy(), [-0.6, -0.8], rtol=1e-6)
    np.testing.assert_allclose(second.grad_norm, 5.0, rtol=1e-6)
    assert int(optimizer.iterations) == 1  # Keras counts updates, not micro-steps


def build_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])


def data(seed=0, n=64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_save_load_continues_training_identically(tmp_path):
    x, y = data()
    model = build_model()
    optimizer = StabilizedOptimizer(
        keras.optimizers.SGD(0.5, momentum=0.9), ks.chain(ks.autoclip(50, history=16), ks.clip_by_value(0.2))
    )
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.optimizer, StabilizedOptimizer)
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    restored.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        model.optimizer.transform.transforms[0].norm_history.numpy(),
        restored.optimizer.transform.transforms[0].norm_history.numpy(),
    )


def test_loss_scale_optimizer_around_or_inside_gives_the_float32_update():
    # A gradient of 1e-9 per weight: float16 cannot hold it without loss scaling.
    gradient = tf.constant([3e-9, 4e-9])
    results = {}
    for arrangement in ["float32", "around", "inside"]:
        w = one_weight()
        sgd = keras.optimizers.SGD(1e8)
        if arrangement == "inside":
            optimizer = StabilizedOptimizer(keras.optimizers.LossScaleOptimizer(sgd), ks.clip_by_global_norm(2.5e-9))
        else:
            optimizer = StabilizedOptimizer(sgd, ks.clip_by_global_norm(2.5e-9))
        if arrangement == "around":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        scaled = gradient if arrangement == "float32" else gradient * optimizer.scale_loss(1.0)
        optimizer.apply([scaled], [w])
        results[arrangement] = w.numpy()
    # ‖g‖ = 5e-9 → clipped to 2.5e-9: update -1e8 · [1.5e-9, 2e-9] = [-0.15, -0.2].
    for arrangement, weights in results.items():
        np.testing.assert_allclose(weights, [-0.15, -0.2], rtol=1e-5, err_msg=arrangement)
