"""AdaGC against a line-by-line numpy port of the reference (lishuai-97/AdaGC, Megatron patch,
`AdaGC.clip_by_norm` with `shard_tensor_clip=False` and no model parallelism), its defaults, and its
state saved with the optimizer."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import MODES

import keras_stability as ks


class ReferenceAdaGC:
    """The reference's AdaGC, torch replaced by numpy (the per-parameter `state` keyed by position)."""

    def __init__(self, clip_ratio=1.04, beta=0.99, eps=1.0e-6, start_clip_steps=100):
        self.clip_ratio = clip_ratio
        self.beta = beta
        self.eps = eps
        self.start_clip_steps = start_clip_steps
        self.steps = 0
        self.state = {}

    def clip_by_norm(self, grads, max_norm, norm_type=2):
        self.steps += 1
        grads = [g.copy() for g in grads]
        max_norm = float(max_norm)
        total_norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))

        if self.steps <= self.start_clip_steps:
            clip_coeff = max_norm / (total_norm + self.eps)
            if clip_coeff < 1.0:
                grads = [g * clip_coeff for g in grads]
            for index, grad in enumerate(grads):
                state = self.state.setdefault(index, {})
                norm_value = np.linalg.norm(grad)
                if "norm_value" not in state:
                    state["norm_value"] = norm_value
                if norm_value < state["norm_value"]:
                    state["norm_value"] = norm_value
        else:
            for index, grad in enumerate(grads):
                state = self.state.setdefault(index, {})
                norm_value = np.linalg.norm(grad)
                if "norm_value" not in state:
                    state["norm_value"] = norm_value
                avg_norm_value = state["norm_value"]
                if norm_value > self.clip_ratio * avg_norm_value:
                    clip_coef = (self.clip_ratio * avg_norm_value) / (norm_value + self.eps)
                    grads[index] = grad * clip_coef
                    norm_value = self.clip_ratio * avg_norm_value
                state["norm_value"] = avg_norm_value * self.beta + norm_value * (1.0 - self.beta)
        return grads, total_norm


def gradient_stream(steps=14, seed=0):
    """Three tensors whose norms drift, with spikes in single tensors and in all at once."""
    rng = np.random.default_rng(seed)
    shapes = [(4, 3), (3,), (2, 2, 3)]
    stream = []
    for step in range(steps):
        grads = [rng.normal(0, 0.3, s).astype(np.float32) * (1 + 0.1 * step) for s in shapes]
        if step in (6, 11):
            grads[step % 3] *= 25.0
        if step == 9:
            grads = [g * 8.0 for g in grads]
        stream.append(grads)
    return stream


def run_in_mode_over(transform, variables, mode):
    """The transform over fixed `variables` (held, not passed: tf.function would turn them into tensors)."""

    def step(*gradients):
        return transform(list(gradients), variables)

    return step if mode == "eager" else tf.function(step, jit_compile=mode == "jit")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("warmup, max_norm", [(4, 1.0), (0, 1.0), (3, 0.2)])
def test_adagc_matches_the_reference(mode, warmup, max_norm):
    stream = gradient_stream()
    reference = ReferenceAdaGC(start_clip_steps=warmup)
    transform = ks.adagc(warmup=warmup, max_norm=max_norm)
    variables = [keras.Variable(np.zeros(g.shape, np.float32), name=f"v{i}") for i, g in enumerate(stream[0])]
    transform.build(variables)
    step = run_in_mode_over(transform, variables, mode)
    clipped_somewhere = False
    for grads in stream:
        expected, _ = reference.clip_by_norm([g.astype(np.float64) for g in grads], max_norm)
        got, changed = step(*[tf.constant(g) for g in grads])
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g.numpy(), e, rtol=2e-5, atol=1e-7)
        state = [reference.state[i]["norm_value"] for i in range(len(grads))]
        np.testing.assert_allclose(transform.norms.numpy(), state, rtol=2e-5)
        assert bool(changed) == any(not np.allclose(g, e) for g, e in zip(grads, expected))
        clipped_somewhere |= bool(changed)
    assert clipped_somewhere and int(transform.steps.numpy()) == len(stream)


def test_adagc_reports_the_clipped_global_norm():
    grads = gradient_stream()[0]
    transform = ks.adagc(warmup=1, max_norm=0.5)
    variables = [keras.Variable(np.zeros(g.shape, np.float32)) for g in grads]
    tensors = [tf.constant(g) for g in grads]
    new, changed, norm = transform.apply_measured(tensors, variables, ks.global_norm(tensors))
    np.testing.assert_allclose(float(norm), 0.5, rtol=1e-5)  # the warm-up clips the global norm to 0.5
    np.testing.assert_allclose(float(ks.global_norm(new)), float(norm), rtol=1e-6)
    assert bool(changed)


def test_adagc_passes_none_and_keeps_the_state_of_absent_tensors():
    transform = ks.adagc(warmup=1)
    variables = [keras.Variable(np.zeros(2, np.float32)), keras.Variable(np.zeros(2, np.float32))]
    transform.build(variables)
    transform([tf.constant([0.3, 0.4]), tf.constant([0.0, 0.1])], variables)
    out, _ = transform([None, tf.constant([0.0, 5.0])], variables)
    assert out[0] is None
    # Tensor 0 was absent: its γ stays 0.5; tensor 1 is clipped to 1.04·0.1 and its γ moves.
    np.testing.assert_allclose(out[1].numpy(), [0.0, 0.104], rtol=1e-5)
    np.testing.assert_allclose(transform.norms.numpy(), [0.5, 0.99 * 0.1 + 0.01 * 0.104], rtol=1e-5)


def test_adagc_refuses_variables_it_was_not_built_for():
    transform = ks.adagc()
    transform.build([keras.Variable([0.0], name="w")])
    with pytest.raises(ValueError, match="Received: 'other'"):
        transform([tf.constant([1.0])], [keras.Variable([0.0], name="other")])


def test_adagc_defaults_are_the_references():
    reference = inspect.signature(ReferenceAdaGC.__init__).parameters
    ours = inspect.signature(ks.adagc).parameters
    assert ours["clip_ratio"].default == reference["clip_ratio"].default == 1.04
    assert ours["beta"].default == reference["beta"].default == 0.99
    assert ours["eps"].default == reference["eps"].default == 1e-6
    assert ours["warmup"].default == reference["start_clip_steps"].default == 100
    assert ours["max_norm"].default == 1.0  # Megatron's --clip-grad default


def test_adagc_config_round_trip_and_state_saved_with_the_model(tmp_path):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    model = ks.stabilize(inner, ks.adagc(clip_ratio=1.1, beta=0.9, warmup=2, max_norm=0.5))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x, y = np.random.default_rng(0).normal(size=(16, 3)), np.random.default_rng(1).normal(size=(16, 1))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model.transform))
    assert restored.get_config() == model.transform.get_config()
    assert model.transform.get_config() == {"clip_ratio": 1.1, "beta": 0.9, "warmup": 2, "max_norm": 0.5, "eps": 1e-6}
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(loaded.optimizer.transform.steps.numpy()) == 4
    np.testing.assert_allclose(loaded.optimizer.transform.norms.numpy(), model.transform.norms.numpy())


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"clip_ratio": 0.0}, "`clip_ratio` of adagc must be a finite number > 0. Received: clip_ratio=0.0."),
        ({"beta": 1.0}, "`beta` of adagc must be in [0, 1). Received: beta=1.0."),
        ({"warmup": -1}, "`warmup` of adagc must be an integer ≥ 0. Received: warmup=-1."),
        ({"max_norm": float("inf")}, "`max_norm` of adagc must be a finite number > 0. Received: max_norm=inf."),
    ],
)
def test_adagc_refuses_bad_arguments(arguments, message):
    with pytest.raises(ValueError) as error:
        ks.adagc(**arguments)
    assert str(error.value) == message


def test_adagc_a_nonfinite_first_step_leaves_the_state_to_the_next():
    variables = [keras.Variable(np.zeros(2, "float32"), name="a"), keras.Variable(np.zeros(2, "float32"), name="b")]
    transform = ks.adagc(warmup=0, clip_ratio=1.0)
    transform.build(variables)
    transform([tf.constant([np.inf, 0.0]), tf.constant([3.0, 4.0])], variables)
    assert int(transform.steps.numpy()) == 0 and np.all(np.isfinite(transform.norms.numpy()))
    transform([tf.constant([6.0, 8.0]), tf.constant([0.0, 2.0])], variables)  # γ starts here: 10 and 2
    np.testing.assert_allclose(transform.norms.numpy(), [10.0, 2.0], rtol=1e-6)
