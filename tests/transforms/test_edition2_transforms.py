"""The second edition's transforms against closed forms, in eager, graph and XLA modes."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import MODES, run_in_mode

from keras_stability.config.transform_specs import TRANSFORM_SPECS
from keras_stability.transforms import (
    FACTORIES,
    clip_by_l1_norm,
    deserialize,
    quantized_ema_clip,
    regularize_gradient,
    serialize,
)

RTOL = 1e-6


def gradients_and_variables():
    gradients = [tf.constant([[3.0, -4.0], [0.5, 0.0]]), tf.constant([-2.0, 0.25])]
    return gradients, [keras.Variable(np.ones(g.shape, np.float32), name=f"v{i}") for i, g in enumerate(gradients)]


def repeated_rows():
    # Rows 0, 0, 2 of a (4, 2) table: dense row 0 = [6, 8], row 2 = [0, -1].
    values = tf.constant([[3.0, 4.0], [3.0, 4.0], [0.0, -1.0]])
    return tf.IndexedSlices(values, tf.constant([0, 0, 2]), tf.constant([4, 2]))


@pytest.mark.parametrize("mode", MODES)
def test_clip_by_l1_norm_closed_form(mode):
    gradients, variables = gradients_and_variables()
    # ‖G‖₁ = 3 + 4 + 0.5 + 0 + 2 + 0.25 = 9.75 > 3, so every entry is scaled by 3 / 9.75.
    out, changed = run_in_mode(lambda *g: clip_by_l1_norm(3.0)(list(g), variables), mode, *gradients)
    for got, g in zip(out, gradients):
        np.testing.assert_allclose(got, g.numpy() * 3.0 / 9.75, rtol=RTOL)
    assert bool(changed)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in out) == pytest.approx(3.0, rel=RTOL)


def test_clip_by_l1_norm_below_threshold_and_idempotent():
    gradients, variables = gradients_and_variables()
    kept, changed = clip_by_l1_norm(10.0)(gradients, variables)
    assert not bool(changed)
    for got, g in zip(kept, gradients):
        np.testing.assert_array_equal(got, g)
    once, _ = clip_by_l1_norm(1.0)(gradients, variables)
    twice, _ = clip_by_l1_norm(1.0)(once, variables)
    for a, b in zip(once, twice):
        np.testing.assert_allclose(a, b, rtol=RTOL)


def test_clip_by_l1_norm_sums_repeated_sparse_rows_first():
    # Row 0 appears as [3, 4] and [-3, -4]: the dense gradient is [[0, 0], 0, [0, -1], 0], L1 = 1
    # (rows measured separately would give 15 and scale by 0.5 / 15 instead of 0.5 / 1).
    rows = tf.constant([[3.0, 4.0], [-3.0, -4.0], [0.0, -1.0]])
    sparse = tf.IndexedSlices(rows, tf.constant([0, 0, 2]), tf.constant([4, 2]))
    variables = [keras.Variable(np.zeros((4, 2), np.float32), name="table")]
    out, changed = clip_by_l1_norm(0.5)([sparse], variables)
    np.testing.assert_allclose(tf.convert_to_tensor(out[0]), [[0, 0], [0, 0], [0, -0.5], [0, 0]], rtol=RTOL)
    assert bool(changed)


def test_clip_by_l1_norm_leaves_nonfinite_gradients():
    variables = [keras.Variable([0.0, 0.0], name="w")]
    out, changed = clip_by_l1_norm(1.0)([tf.constant([np.inf, 1.0])], variables)
    assert np.isinf(out[0][0]) and not bool(changed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("l1, l2", [(0.5, 0.0), (0.0, 1.0), (0.5, 1.0)])
def test_regularize_gradient_is_the_proximal_point(mode, l1, l2):
    gradients, variables = gradients_and_variables()
    out, changed = run_in_mode(lambda *g: regularize_gradient(l1, l2)(list(g), variables), mode, *gradients)
    # Written out for (l1, l2) = (0.5, 1): [[3, -4], [0.5, 0]] → [[1.25, -1.75], [0, 0]]; [-2, 0.25] → [-0.75, 0].
    for got, g in zip(out, gradients):
        g = g.numpy()
        np.testing.assert_allclose(got, np.sign(g) * np.maximum(np.abs(g) - l1, 0) / (1 + l2), rtol=RTOL)
    assert bool(changed)
    if (l1, l2) == (0.5, 1.0):
        np.testing.assert_allclose(out[0], [[1.25, -1.75], [0.0, 0.0]], rtol=RTOL)


def test_regularize_gradient_minimises_its_objective():
    # The returned u beats nearby points on ½‖u − g‖² + l1‖u‖₁ + (l2/2)‖u‖² (a proximal point's definition).
    rng = np.random.default_rng(0)
    g = rng.normal(0, 2, 50).astype(np.float32)
    l1, l2 = 0.3, 0.7
    (u,), _ = regularize_gradient(l1, l2)([tf.constant(g)], [keras.Variable(np.zeros(50, np.float32))])
    objective = lambda x: 0.5 * np.sum((x - g) ** 2) + l1 * np.sum(np.abs(x)) + 0.5 * l2 * np.sum(x**2)  # noqa: E731
    best = objective(u.numpy().astype(np.float64))
    for _ in range(200):
        assert objective(u.numpy() + rng.normal(0, 0.05, 50)) >= best - 1e-5


def test_regularize_gradient_needs_a_penalty():
    with pytest.raises(ValueError, match=r"needs a penalty: set `l1` or `l2` > 0\. Received: l1=0\.0, l2=0\.0"):
        regularize_gradient()


def reference_quantized_ema(sequence, limit, levels, decay):
    step, average, outputs = limit / levels, np.zeros_like(sequence[0], np.float64), []
    for t, g in enumerate(sequence, start=1):
        q = np.round(np.clip(g, -limit, limit) / step) * step
        average = decay * average + (1 - decay) * q
        outputs.append(average / (1 - decay**t))
    return outputs


@pytest.mark.parametrize("mode", MODES)
def test_quantized_ema_clip_matches_the_reference(mode):
    rng = np.random.default_rng(1)
    sequence = [rng.normal(0, 2, (3, 4)).astype(np.float32) for _ in range(5)]
    variables = [keras.Variable(np.zeros((3, 4), np.float32), name="w")]
    transform = quantized_ema_clip(1.0, levels=4, decay=0.8)
    transform.build(variables)
    step = transform if mode == "eager" else tf.function(transform, jit_compile=mode == "jit")
    for g, want in zip(sequence, reference_quantized_ema(sequence, 1.0, 4, 0.8)):
        (got,), _ = step([tf.constant(g)], variables)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert np.max(np.abs(got)) <= 1.0 + 1e-6  # an average of values in [-limit, limit]
    # First step returns q itself: bias correction undoes the (1 - decay) factor.
    first = reference_quantized_ema(sequence[:1], 1.0, 4, 0.8)[0]
    np.testing.assert_allclose(first, np.round(np.clip(sequence[0], -1, 1) * 4) / 4, atol=1e-12)


def test_quantized_ema_clip_skips_nonfinite_steps_and_densifies_sparse_rows():
    variables = [keras.Variable(np.zeros((4, 2), np.float32), name="table")]
    transform = quantized_ema_clip(10.0, levels=10, decay=0.5)
    (first,), _ = transform([repeated_rows()], variables)
    np.testing.assert_allclose(first, [[6.0, 8.0], [0, 0], [0, -1.0], [0, 0]], rtol=RTOL)
    state = [v.numpy().copy() for v in transform.variables]
    (passed,), _ = transform([tf.constant(np.full((4, 2), np.nan, np.float32))], variables)
    assert np.all(np.isnan(passed))
    for old, new in zip(state, transform.variables):
        np.testing.assert_array_equal(old, new.numpy())


@pytest.mark.parametrize(
    "transform", [clip_by_l1_norm(2.0), regularize_gradient(0.1, 0.5), quantized_ema_clip(1.0, levels=8, decay=0.5)]
)
def test_serialization_round_trip(transform):
    again = deserialize(serialize(transform))
    assert type(again) is type(transform) and again.get_config() == transform.get_config()


def test_specs_build_the_registered_transforms_with_the_same_options():
    for name, options in [
        ("clip_by_l1_norm", {"max_norm": 2.0}),
        ("regularize_gradient", {"l1": 0.1}),
        ("quantized_ema_clip", {"limit": 1.0, "levels": 8, "decay": 0.5}),
    ]:
        spec = TRANSFORM_SPECS[name].model_validate({"name": name, **options})
        built = FACTORIES[name](**{k: v for k, v in spec.model_dump().items() if k != "name"})
        assert {k: v for k, v in built.get_config().items() if k in options} == options
