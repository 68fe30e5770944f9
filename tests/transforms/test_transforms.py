"""Transforms against TF references, closed forms, invariants, idempotence and finiteness."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import MODES, run_in_mode

import keras_stability as ks
from keras_stability import transforms
from keras_stability.transforms import norms
from keras_stability.transforms.percentile import percentile_of_filled

RTOL = 1e-6  # float32 identities


def random_gradients(seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    shapes = [(5, 4), (4,), (3, 3, 2, 6), (6,)]
    return [tf.constant(rng.normal(0, scale, s).astype(np.float32)) for s in shapes]


def variables_like(gradients, seed=1):
    rng = np.random.default_rng(seed)
    return [
        keras.Variable(rng.normal(0, 1, g.shape).astype(np.float32), name=f"layer_{i}_kernel")
        for i, g in enumerate(gradients)
    ]


def every_transform():
    return {
        "clip_by_value": ks.clip_by_value(0.5),
        "clip_by_norm": ks.clip_by_norm(1.0),
        "clip_by_global_norm": ks.clip_by_global_norm(1.0),
        "normalize_gradient": ks.normalize_gradient(0.5),
        "adaptive_clip": ks.adaptive_clip(0.01),
        "autoclip": ks.autoclip(percentile=50, history=8),
        "zclip": ks.zclip(warmup=2),
        "clip_by_l1_norm": transforms.clip_by_l1_norm(5.0),
        "regularize_gradient": transforms.regularize_gradient(l1=0.5, l2=0.1),
        "quantized_ema_clip": transforms.quantized_ema_clip(0.5, levels=8),
        "adagc": ks.adagc(warmup=1),
        "chain": ks.chain(ks.adaptive_clip(0.05), ks.clip_by_global_norm(1.0)),
    }


# Stateful: their output depends on the gradients seen before, so applying them twice is not one step.
STATEFUL = ("autoclip", "zclip", "quantized_ema_clip", "adagc")
# Not projections: each application moves every entry towards zero again (soft-thresholding by l1,
# then 1 / (1 + l2)), so a second application changes what the first returned.
SHRINKING = ("regularize_gradient",)


def test_every_registered_transform_is_tested():
    assert set(every_transform()) == {*transforms.FACTORIES, "chain"}


def apply(transform, gradients, variables, mode):
    transform.build(variables)
    return run_in_mode(lambda *g: transform(list(g), variables), mode, *gradients)


@pytest.mark.parametrize("mode", MODES)
def test_clip_by_value_matches_tf(mode):
    gradients = random_gradients()
    clipped, changed = apply(ks.clip_by_value(0.5), gradients, variables_like(gradients), mode)
    for got, g in zip(clipped, gradients):
        np.testing.assert_allclose(got, tf.clip_by_value(g, -0.5, 0.5), rtol=RTOL)
    assert bool(changed)


@pytest.mark.parametrize("mode", MODES)
def test_clip_by_norm_matches_tf(mode):
    gradients = random_gradients()
    clipped, changed = apply(ks.clip_by_norm(1.0), gradients, variables_like(gradients), mode)
    for got, g in zip(clipped, gradients):
        np.testing.assert_allclose(got, tf.clip_by_norm(g, 1.0), rtol=RTOL)
    assert bool(changed)


@pytest.mark.parametrize("mode", MODES)
def test_clip_by_global_norm_matches_tf(mode):
    gradients = random_gradients()
    clipped, changed = apply(ks.clip_by_global_norm(1.0), gradients, variables_like(gradients), mode)
    expected, norm = tf.clip_by_global_norm(gradients, 1.0)
    for got, want in zip(clipped, expected):
        np.testing.assert_allclose(got, want, rtol=RTOL)
    np.testing.assert_allclose(ks.global_norm(gradients), norm, rtol=RTOL)
    assert bool(changed)


@pytest.mark.parametrize("mode", MODES)
def test_normalize_gradient_closed_form(mode):
    gradients = [tf.constant([3.0, 0.0]), tf.constant([[4.0]])]
    out, changed = apply(ks.normalize_gradient(0.5), gradients, variables_like(gradients), mode)
    # ‖G‖ = 5, so every entry is multiplied by 0.5 / 5 = 0.1.
    np.testing.assert_allclose(out[0], [0.3, 0.0], rtol=RTOL)
    np.testing.assert_allclose(out[1], [[0.4]], rtol=RTOL)
    assert bool(changed)


@pytest.mark.parametrize("mode", MODES)
def test_adaptive_clip_closed_form(mode):
    # Dense kernel (in=2, out=2): unit = column. ‖W₀‖ = 5, ‖W₁‖ = 0 → max(0, eps=0.1) = 0.1.
    kernel = keras.Variable([[3.0, 0.0], [4.0, 0.0]], name="dense_kernel")
    head = keras.Variable([[1.0]], name="head_kernel")
    gradients = [tf.constant([[6.0, 1.0], [8.0, 0.0]]), tf.constant([[100.0]])]
    transform = ks.adaptive_clip(clip_factor=0.1, eps=0.1, exclude=["head"])
    out, changed = apply(transform, gradients, [kernel, head], mode)
    # Column 0: ‖G₀‖ = 10 > 0.1·5 = 0.5 → scaled by 0.05. Column 1: ‖G₁‖ = 1 > 0.1·0.1 → by 0.01.
    np.testing.assert_allclose(out[0], [[0.3, 0.01], [0.4, 0.0]], rtol=RTOL)
    np.testing.assert_allclose(out[1], [[100.0]], rtol=RTOL)  # excluded head untouched
    assert bool(changed)


def test_adaptive_clip_conv_unit_is_output_filter():
    kernel = keras.Variable(np.ones((2, 2, 1, 2), np.float32), name="conv_kernel")  # ‖W_f‖ = 2
    gradient = np.zeros((2, 2, 1, 2), np.float32)
    gradient[..., 0] = 1.0  # ‖G₀‖ = 2 > 0.5·2 = 1 → scaled by 1/2
    gradient[..., 1] = 0.25  # ‖G₁‖ = 0.5 ≤ 1 → kept
    out, _ = apply(ks.adaptive_clip(0.5), [tf.constant(gradient)], [kernel], "eager")
    np.testing.assert_allclose(out[0][..., 0], 0.5, rtol=RTOL)
    np.testing.assert_allclose(out[0][..., 1], 0.25, rtol=RTOL)


@pytest.mark.parametrize("mode", MODES)
def test_autoclip_clips_to_percentile_of_history(mode):
    transform = ks.autoclip(percentile=50, history=3)
    variables = [keras.Variable([0.0, 0.0], name="w")]
    transform.build(variables)
    step = tf.function(transform, jit_compile=mode == "jit") if mode != "eager" else transform
    thresholds = []
    # Norms 1, 3, 2, 10: histories [1], [1,3], [1,3,2], [3,2,10] (ring buffer of 3).
    for norm in [1.0, 3.0, 2.0, 10.0]:
        out, _ = step([tf.constant([norm, 0.0])], variables)
        thresholds.append(float(out[0][0]))
    # Medians with linear interpolation: 1, 2, 2, 3 — each norm clipped to min(norm, median).
    np.testing.assert_allclose(thresholds, [1.0, 2.0, 2.0, 3.0], rtol=RTOL)
    np.testing.assert_allclose(transform.norm_history.numpy(), [10.0, 3.0, 2.0], rtol=RTOL)


def test_autoclip_percentile_matches_numpy():
    rng = np.random.default_rng(3)
    history = rng.uniform(0, 5, 7).astype(np.float32)
    for percentile in [0, 10, 37.5, 90, 100]:
        got = percentile_of_filled(tf.constant(np.r_[history, [0, 0, 0]].astype(np.float32)), 7, percentile)
        np.testing.assert_allclose(got, np.percentile(history, percentile), rtol=RTOL)


@pytest.mark.parametrize("name", ["autoclip", "zclip"])
def test_nonfinite_norm_does_not_poison_state(name):
    transform = every_transform()[name]
    variables = [keras.Variable([0.0, 0.0], name="w")]
    transform.build(variables)
    for norm in [1.0, 2.0, 3.0]:
        transform([tf.constant([norm, 0.0])], variables)
    before = [v.numpy().copy() for v in transform.variables]
    out, _ = transform([tf.constant([np.nan, 1.0])], variables)
    for old, new in zip(before, transform.variables):
        np.testing.assert_array_equal(old, new.numpy())
    assert np.isnan(out[0][0])  # passed through for the non-finite policy to handle


@pytest.mark.parametrize("name", list(every_transform()))
@pytest.mark.parametrize("mode", MODES)
def test_every_transform_is_finite_and_bounded(name, mode):
    transform = every_transform()[name]
    gradients = random_gradients(seed=5, scale=10.0)
    variables = variables_like(gradients)
    transform.build(variables)
    # The variables stay Python objects, as in the optimizer's step (AdaGC finds its state by them).
    step = tf.function(lambda g: transform(g, variables), jit_compile=mode == "jit") if mode != "eager" else None
    for _ in range(3):  # past the stateful transforms' warm-up
        out, _ = step(gradients) if step is not None else transform(gradients, variables)
    for g in out:
        assert np.all(np.isfinite(g))
    bounds = {"clip_by_global_norm": 1.0, "normalize_gradient": 0.5, "chain": 1.0}
    if name in bounds:
        assert float(ks.global_norm(out)) <= bounds[name] * (1 + RTOL)
    if name == "clip_by_l1_norm":
        assert sum(float(tf.reduce_sum(tf.abs(g))) for g in out) <= 5.0 * (1 + RTOL)
    if name == "regularize_gradient":  # every entry moved towards zero: no norm grows
        assert float(ks.global_norm(out)) <= float(ks.global_norm(gradients))
    if name == "quantized_ema_clip":  # an average of entries clipped to [-limit, limit]
        assert max(float(tf.reduce_max(tf.abs(g))) for g in out) <= 0.5 * (1 + RTOL)
    if name == "clip_by_norm":
        assert max(float(tf.norm(g)) for g in out) <= 1.0 * (1 + RTOL)
    if name == "clip_by_value":
        assert max(float(tf.reduce_max(tf.abs(g))) for g in out) <= 0.5


@pytest.mark.parametrize("name", list(every_transform()))
@pytest.mark.parametrize("mode", MODES)
def test_apply_measured_equals_calling_and_reports_the_new_norm(name, mode):
    # What StabilizedOptimizer calls: the same gradients as `transform(...)`, bit for bit, plus the
    # output's global norm (for global-norm transforms derived, not measured: equal to float32 rounding).
    variables = variables_like(random_gradients())
    measured, called = every_transform()[name], every_transform()[name]
    measured.build(variables)
    called.build(variables)
    # Stateful transforms must evolve their state the same way: norms vary, the last one a spike.
    for scale in (1.0, 0.5, 2.0, 1.5, 40.0):
        gradients = [g * scale for g in random_gradients(seed=3)]
        new, changed, new_norm = run_in_mode(
            lambda *g: measured.apply_measured(list(g), variables, norms.global_norm(list(g))), mode, *gradients
        )
        expected, expected_changed = run_in_mode(lambda *g: called(list(g), variables), mode, *gradients)
        for got, want in zip(new, expected):
            np.testing.assert_array_equal(got, want)
        assert bool(changed) == bool(expected_changed), scale
        np.testing.assert_allclose(float(new_norm), float(norms.global_norm(expected)), rtol=RTOL)


@pytest.mark.parametrize("name", [name for name in every_transform() if name not in STATEFUL + SHRINKING])
def test_stateless_transforms_are_idempotent(name):
    transform = every_transform()[name]
    gradients = random_gradients(seed=7, scale=10.0)
    variables = variables_like(gradients)
    once, changed_once = transform(gradients, variables)
    twice, _changed_twice = transform(once, variables)
    for a, b in zip(once, twice):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert bool(changed_once)


def sparse_gradient_with_repeats():
    # Rows 0, 0, 2 of a (4, 2) table: the dense gradient has row 0 = [3, 4] + [3, 4] = [6, 8].
    values = tf.constant([[3.0, 4.0], [3.0, 4.0], [0.0, 1.0]])
    return tf.IndexedSlices(values, tf.constant([0, 0, 2]), tf.constant([4, 2]))


def test_sparse_norm_is_norm_of_dense_gradient():
    sparse = sparse_gradient_with_repeats()
    dense = tf.convert_to_tensor(sparse)
    np.testing.assert_allclose(ks.global_norm([sparse]), tf.norm(dense), rtol=RTOL)  # √101
    # What TF does instead: it measures the three rows separately, √51.
    _, tf_norm = tf.clip_by_global_norm([sparse], 1.0)
    np.testing.assert_allclose(tf_norm, np.sqrt(51.0), rtol=RTOL)
    assert not np.isclose(float(tf_norm), float(tf.norm(dense)))


@pytest.mark.parametrize("name", list(every_transform()))
def test_sparse_gradients_transform_like_their_dense_tensor(name):
    # A fresh transform for each: a stateful one's second call would see the first's state.
    sparse_transform, dense_transform = every_transform()[name], every_transform()[name]
    variables = [keras.Variable(np.ones((4, 2), np.float32), name="embeddings")]
    sparse_transform.build(variables)
    dense_transform.build(variables)
    sparse_out, _ = sparse_transform([sparse_gradient_with_repeats()], variables)
    dense_out, _ = dense_transform([tf.convert_to_tensor(sparse_gradient_with_repeats())], variables)
    np.testing.assert_allclose(tf.convert_to_tensor(sparse_out[0]), dense_out[0], rtol=RTOL)


def test_embedding_gradient_is_clipped_by_its_true_norm():
    embedding = keras.layers.Embedding(4, 2, embeddings_initializer="zeros")
    ids = tf.constant([1, 1, 1, 1])
    embedding.build(ids.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(embedding(ids) * tf.constant([3.0, 4.0]))
    (gradient,) = tape.gradient(loss, embedding.trainable_variables)
    assert isinstance(gradient, tf.IndexedSlices)
    out, _ = ks.clip_by_global_norm(1.0)([gradient], embedding.trainable_variables)
    # Dense row 1 = 4·[3, 4] = [12, 16], norm 20 → clipped to [0.6, 0.8]; TF would give 4·[0.3, 0.4]·... = norm 2.
    np.testing.assert_allclose(tf.convert_to_tensor(out[0])[1], [0.6, 0.8], rtol=RTOL)
    tf_out, _ = tf.clip_by_global_norm([gradient], 1.0)
    np.testing.assert_allclose(tf.convert_to_tensor(tf_out[0])[1], [1.2, 1.6], rtol=RTOL)


@pytest.mark.parametrize("name", list(every_transform()))
def test_serialization_round_trip(name):
    transform = every_transform()[name]
    restored = transforms.deserialize(transforms.serialize(transform))
    assert type(restored) is type(transform)
    assert restored.get_config() == transform.get_config()
    gradients = random_gradients(seed=2)
    variables = variables_like(gradients)
    for a, b in zip(transform(gradients, variables)[0], restored(gradients, variables)[0]):
        np.testing.assert_allclose(a, b, rtol=RTOL)


@pytest.mark.parametrize(
    "factory, arguments, message",
    [
        (ks.clip_by_value, (0,), "`limit` of clip_by_value must be a finite number > 0. Received: limit=0."),
        (ks.clip_by_norm, (-1.0,), "Received: max_norm=-1.0."),
        (ks.clip_by_global_norm, ("1",), "Received: max_norm='1'."),
        (ks.autoclip, (101,), "`percentile` of autoclip must be in [0, 100]. Received: percentile=101."),
        (ks.autoclip, (10, 0), "Received: history=0."),
        (ks.zclip, (1.0,), "`alpha` of zclip must be in (0, 1). Received: alpha=1.0."),
        (ks.adaptive_clip, (0.01, 1e-3, ["("]), "`exclude` of adaptive_clip takes regular expressions"),
    ],
)
def test_bad_arguments_are_refused_clearly(factory, arguments, message):
    with pytest.raises(ValueError) as error:
        factory(*arguments)
    assert message in str(error.value)


def test_chain_checks_its_arguments():
    with pytest.raises(ValueError, match=r"chain\(\) needs at least one transform"):
        ks.chain()
    with pytest.raises(TypeError, match=r"Received: \[ClipByNorm\(max_norm=1.0\)\] \(type list\) at position 0"):
        ks.chain([ks.clip_by_norm(1.0)])


def test_chain_applies_in_order_and_reports_any_change():
    gradients = [tf.constant([3.0, 4.0])]
    variables = [keras.Variable([0.0, 0.0], name="w")]
    out, changed = ks.chain(ks.clip_by_value(10.0), ks.clip_by_global_norm(1.0))(gradients, variables)
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=RTOL)
    assert bool(changed)
    _, unchanged = ks.chain(ks.clip_by_value(10.0), ks.clip_by_global_norm(10.0))(gradients, variables)
    assert not bool(unchanged)


def test_none_gradients_pass_through():
    variables = [keras.Variable([1.0], name="a"), keras.Variable([1.0], name="b")]
    for transform in every_transform().values():
        out, _ = transform([None, tf.constant([2.0])], variables)
        assert out[0] is None


def test_norms_module_handles_dtypes():
    half = tf.constant([3.0, 4.0], tf.float16)
    assert norms.global_norm([half]).dtype == tf.float32
    np.testing.assert_allclose(norms.global_norm([half]), 5.0, rtol=RTOL)


@pytest.mark.parametrize("mode", MODES)
def test_sparse_global_norm_in_every_mode(mode):
    sparse = sparse_gradient_with_repeats()

    def norm(values, indices):
        return ks.global_norm([tf.IndexedSlices(values, indices, sparse.dense_shape)])

    np.testing.assert_allclose(run_in_mode(norm, mode, sparse.values, sparse.indices), np.sqrt(101.0), rtol=RTOL)


def reference_agc(gradient, weight, clip_factor, eps, axes):
    """NFNets/optax `adaptive_grad_clip` with unit norms summed over `axes` (numpy, float64)."""

    def unit(x):
        return np.sqrt(np.sum(np.square(x), axis=tuple(axes), keepdims=True))

    max_norm = clip_factor * np.maximum(unit(weight), eps)
    grad_norm = unit(gradient)
    return np.where(grad_norm > max_norm, gradient * max_norm / np.maximum(grad_norm, 1e-6), gradient)


@pytest.mark.parametrize("mode", MODES)
def test_adaptive_clip_multi_head_kernels_reduce_the_input_axis(mode):
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)
    sequence = np.zeros((1, 4, 5), np.float32)
    layer(sequence, sequence)
    kernels = {v.path.split("/")[-2]: v for v in layer.trainable_variables if v.path.endswith("kernel")}
    query, output = kernels["query"], kernels["attention_output"]
    assert tuple(query.shape) == (5, 2, 3) and tuple(output.shape) == (2, 3, 5)
    rng = np.random.default_rng(0)
    gradients = [tf.constant(rng.normal(0, 1, v.shape).astype(np.float32)) for v in (query, output)]
    clipped, _ = apply(ks.adaptive_clip(0.05), gradients, [query, output], mode)
    # Query: one unit per (head, head_dim), the d_model axis summed (NFNets, optax). Output kernel:
    # one unit per d_model output, heads and head_dim summed.
    np.testing.assert_allclose(
        clipped[0], reference_agc(gradients[0].numpy(), query.numpy(), 0.05, 1e-3, [0]), rtol=1e-5
    )
    np.testing.assert_allclose(
        clipped[1], reference_agc(gradients[1].numpy(), output.numpy(), 0.05, 1e-3, [0, 1]), rtol=1e-5
    )
    merged, _ = apply(ks.adaptive_clip(0.05, unit_axes={}), gradients[:1], [query], mode)
    np.testing.assert_allclose(
        merged[0], reference_agc(gradients[0].numpy(), query.numpy(), 0.05, 1e-3, [0, 1]), rtol=1e-5
    )
    assert not np.allclose(merged[0], clipped[0])


def test_adaptive_clip_unit_axes_round_trip_and_errors():
    transform = ks.adaptive_clip(0.02, unit_axes={"embed/kernel$": [1]})
    assert transforms.deserialize(transforms.serialize(transform)).get_config() == transform.get_config()
    with pytest.raises(ValueError, match=r"maps path patterns to lists of axes .* Received: 'q': 0."):
        ks.adaptive_clip(unit_axes={"q": 0})
