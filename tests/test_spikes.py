"""Spike skipping against a numpy port of OLMo-core's `SkipStepOptimizer` (allenai/OLMo-core,
src/olmo_core/optim/skip_step_optimizer.py at a14de852), skipped steps against Keras's own optimizer
run on the kept steps alone, bounded skipping, and the policy's state saved with the model."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import MODES

import keras_stability as ks
from keras_stability.spikes import STATISTICS


class ReferenceSkipStep:
    """`SkipStepOptimizer`'s window and `get_step_factor`, torch replaced by numpy."""

    def __init__(self, rolling_interval_length=128, sigma_factor=6):
        self.rolling_interval_length = rolling_interval_length
        self.sigma_factor = sigma_factor
        self._losses = []
        self._grad_norms = []

    def set_latest(self, loss, grad_norm):
        self._losses.append(loss)
        while len(self._losses) > self.rolling_interval_length + 1:
            self._losses.pop(0)
        self._grad_norms.append(grad_norm)
        while len(self._grad_norms) > self.rolling_interval_length + 1:
            self._grad_norms.pop(0)

    def get_step_factor(self):
        if len(self._losses) < max(20, self.rolling_interval_length // 2):
            return 1.0
        # torch.std_mean: Bessel-corrected std.
        loss_std, loss_mean = np.std(self._losses[:-1], ddof=1), np.mean(self._losses[:-1])
        grad_norm_std, grad_norm_mean = np.std(self._grad_norms[:-1], ddof=1), np.mean(self._grad_norms[:-1])
        return float(
            ((self._losses[-1] - loss_mean) <= self.sigma_factor * loss_std)
            and ((self._grad_norms[-1] - grad_norm_mean) <= self.sigma_factor * grad_norm_std)
        )


def spiky_stream(steps=90, seed=0):
    """Noisy, slowly falling losses and norms; spikes in the loss, the norm, or both."""
    rng = np.random.default_rng(seed)
    losses = 2.0 * np.exp(-np.arange(steps) / 60) + rng.normal(0, 0.02, steps)
    norms = 1.0 + rng.normal(0, 0.05, steps)
    losses[[30, 55, 56]] += [1.0, 0.8, 0.9]
    norms[[41, 56, 70]] *= [10.0, 4.0, 0.1]  # the drop at 70 is no spike: the test is one-sided
    return losses.astype(np.float32), norms.astype(np.float32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("window, threshold", [(40, 6.0), (25, 3.0)])
def test_decisions_match_olmo_core(mode, window, threshold):
    losses, norms = spiky_stream()
    reference = ReferenceSkipStep(window, threshold)
    policy = ks.skip_spikes(window=window, threshold=threshold)
    policy.build()

    def judge(loss, norm):
        return policy.judge(loss, norm), tf.convert_to_tensor(policy.statistics)

    step = judge if mode == "eager" else tf.function(judge, jit_compile=mode == "jit")
    decisions, expected = [], []
    for loss, norm in zip(losses, norms):
        reference.set_latest(float(loss), float(norm))
        expected.append(reference.get_step_factor() == 1.0)
        proceed, statistics = step(tf.constant(loss), tf.constant(norm))
        decisions.append(bool(proceed))
        if len(reference._losses) > 2:
            history = np.array(reference._losses[:-1], np.float64)
            np.testing.assert_allclose(statistics.numpy()[:2], [history.mean(), history.std(ddof=1)], rtol=1e-4)
    assert decisions == expected
    assert not all(expected) and int(policy.skipped_steps.numpy()) == expected.count(False)


def test_off_until_min_samples_and_one_sided():
    policy = ks.skip_spikes(window=10, threshold=1.0, min_samples=4)
    policy.build()
    # Steps 1-3 always proceed (fewer than 4 values with the current one), even a huge norm.
    assert [bool(policy.judge(None, tf.constant(n))) for n in [1.0, 1.2, 100.0]] == [True, True, True]
    # Window (1, 1.2, 100): mean 34.07, std 57.1. A value far below the mean is no spike.
    assert bool(policy.judge(None, tf.constant(-500.0)))


def test_non_finite_values_stay_out_of_the_window():
    policy = ks.skip_spikes(window=4, min_samples=3)
    policy.build()
    for value in [1.0, 2.0, float("nan"), 3.0]:
        policy.judge(tf.constant(value), tf.constant(value))
    # The NaN step (active: 2 values + itself) was judged a spike, and not recorded.
    assert int(policy.skipped_steps.numpy()) == 1
    np.testing.assert_array_equal(policy.counts.numpy(), [3, 3])
    np.testing.assert_allclose(policy.history.numpy()[:, :3], [[1, 2, 3], [1, 2, 3]])


def run_adam(gradients, spikes=None):
    w = keras.Variable(np.array([1.0, -2.0], np.float32))
    inner = keras.optimizers.Adam(0.1)
    optimizer = inner if spikes is None else ks.StabilizedOptimizer(inner, spikes=spikes)
    for g in gradients:
        optimizer.apply([tf.constant(g)], [w])
    return w.numpy(), inner


def test_a_skipped_step_leaves_variables_moments_and_step_count_untouched():
    rng = np.random.default_rng(3)
    gradients = [rng.normal(0, 0.1, 2).astype(np.float32) + 0.5 for _ in range(12)]
    gradients[8] = np.array([40.0, -30.0], np.float32)
    w, inner = run_adam(gradients, ks.skip_spikes(window=6, min_samples=5))
    kept_w, kept = run_adam(gradients[:8] + gradients[9:])  # Keras's Adam on the kept steps alone
    np.testing.assert_array_equal(w, kept_w)
    assert int(inner.iterations.numpy()) == int(kept.iterations.numpy()) == 11
    for ours, theirs in zip(inner.variables, kept.variables):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def spiky_regression(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(96, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-1.0], [0.5]], np.float32)).astype(np.float32)
    y[64:72] += 200.0  # batch 8 of 12 (batch size 8): a loss and gradient spike
    return x, y


def linear_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_skips_the_spiking_batch_and_logs_the_telemetry(jit_compile):
    x, y = spiky_regression()
    model = ks.stabilize(linear_model(), spikes=ks.skip_spikes(window=8, min_samples=6))
    model.compile(keras.optimizers.SGD(0.05), "mse", jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    assert history["spike_skipped_steps"] == [1.0]
    assert int(model.optimizer.iterations.numpy()) == 11
    assert {f"spike_{name}" for name in STATISTICS} | {"skip_streak"} <= set(history)
    # The same model trained without the spiking batch.
    plain = ks.stabilize(linear_model())
    plain.compile(keras.optimizers.SGD(0.05), "mse", jit_compile=jit_compile)
    keep = np.r_[0:64, 72:96]
    plain.fit(x[keep], y[keep], batch_size=8, epochs=1, shuffle=False, verbose=0)
    for ours, theirs in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    # train_on_batch's value stays Keras's: the loss alone for a loss-only model.
    assert isinstance(model.train_on_batch(x[:8], y[:8]), float)


def escalating_spikes():
    """Batches 8 to 11 spike, each ten times more than the one before: a window holding the last
    spike does not take in the next one."""
    x, y = spiky_regression()
    for k, start in enumerate(range(64, 96, 8)):
        y[start : start + 8] += 200.0 * 10.0**k - (200.0 if k == 0 else 0.0)
    return x, y


def test_a_streak_past_max_consecutive_raises_skip_streak_error():
    x, y = escalating_spikes()
    spikes = ks.skip_spikes(window=8, min_samples=6, threshold=3.0, max_consecutive=3)
    model = ks.stabilize(linear_model(), spikes=spikes)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    with pytest.raises(ks.SkipStreakError, match="left out 3 steps in a row"):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 8


def test_a_streak_with_rollback_keeps_training_and_reports_it():
    x, y = escalating_spikes()
    spikes = ks.skip_spikes(window=8, min_samples=6, threshold=3.0, max_consecutive=3, on_streak="rollback")
    model = ks.stabilize(linear_model(), spikes=spikes)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    streaks = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: streaks.append(logs["skip_streak"])
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    assert streaks == [0.0] * 8 + [1.0, 2.0, 3.0, 4.0]


def test_streak_counts_non_finite_steps_too():
    w = keras.Variable([0.0])
    optimizer = ks.StabilizedOptimizer(keras.optimizers.SGD(0.1), spikes=ks.skip_spikes(window=4, min_samples=3))
    for g in [1.0, float("nan"), float("inf"), 1.0]:
        optimizer.apply([tf.constant([g])], [w])
        if g != 1.0:
            assert int(optimizer.spikes.streak.numpy()) == (1 if np.isnan(g) else 2)
    assert int(optimizer.spikes.streak.numpy()) == 0 and int(optimizer.nonfinite_steps.numpy()) == 2


def test_policy_config_round_trip_and_state_saved_with_the_model(tmp_path):
    x, y = spiky_regression()
    spikes = ks.skip_spikes(window=8, threshold=4.0, min_samples=6, max_consecutive=5, on_streak="rollback")
    model = ks.stabilize(linear_model(), spikes=spikes)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.optimizer.spikes.get_config() == spikes.get_config() == loaded.spikes.get_config()
    for ours, theirs in zip(spikes.variables, loaded.optimizer.spikes.variables):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    optimizer = ks.StabilizedOptimizer.from_config(model.optimizer.get_config())
    assert optimizer.spikes.get_config() == spikes.get_config()


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"window": 1}, "`window` of skip_spikes must be an integer ≥ 2. Received: window=1."),
        ({"threshold": 0}, "`threshold` of skip_spikes must be a number > 0. Received: threshold=0."),
        ({"window": 10}, "must be an integer in [2, window + 1 = 11]. Received: min_samples=20."),
        (
            {"max_consecutive": 0},
            "`max_consecutive` of skip_spikes must be an integer ≥ 1. Received: max_consecutive=0.",
        ),
        (
            {"on_streak": "stop"},
            "`on_streak` of skip_spikes must be one of 'raise', 'rollback'. Received: on_streak='stop'.",
        ),
    ],
)
def test_skip_spikes_refuses_bad_arguments(arguments, message):
    with pytest.raises(ValueError) as error:
        ks.skip_spikes(**arguments)
    assert message in str(error.value)


def test_optimizer_refuses_a_spikes_argument_that_is_no_policy():
    with pytest.raises(TypeError, match="Received: spikes=6"):
        ks.StabilizedOptimizer(keras.optimizers.SGD(0.1), spikes=6)


def mirrored_spike_fit(strategy, x, y):
    with strategy.scope():
        inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="ones")])
        model = ks.stabilize(inner, ks.clip_by_global_norm(5.0), spikes=ks.skip_spikes(window=8, min_samples=6))
        model.compile(keras.optimizers.SGD(0.05), "mse")
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    return model.get_weights(), history, model.optimizer.spikes


def test_two_replicas_take_the_one_device_decisions(two_replicas):
    # Each replica holds half of every batch; the spike in batch 8 lies in one replica's half only.
    x, y = spiky_regression()
    y[64:72] -= 200.0
    y[64:68] += 400.0
    single_weights, single, single_policy = mirrored_spike_fit(tf.distribute.get_strategy(), x, y)
    weights, mirrored, policy = mirrored_spike_fit(two_replicas, x, y)
    assert single["spike_skipped_steps"] == mirrored["spike_skipped_steps"] == [1.0]
    for ours, theirs in zip(weights, single_weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    # The window holds the whole batch's loss and norm, as on one device.
    np.testing.assert_allclose(policy.history.numpy(), single_policy.history.numpy(), rtol=1e-5)


def test_with_loss_scaling_a_spike_neither_lowers_nor_grows_the_loss_scale():
    w = keras.Variable([0.0])
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=8.0, dynamic_growth_steps=100)
    optimizer = ks.StabilizedOptimizer(scaled, spikes=ks.skip_spikes(window=4, min_samples=3))
    for g in [1.0, 1.1, 0.9, 50.0]:  # scaled gradients: the wrapper unscales them by 8
        optimizer.apply([tf.constant([8.0 * g])], [w])
    # The spike (the 4th step) is left out: three updates, the growth counter at 3, the scale kept.
    np.testing.assert_allclose(w.numpy(), [-0.1 * (1.0 + 1.1 + 0.9)], rtol=1e-6)
    assert int(scaled.step_counter.numpy()) == 3 and float(scaled.dynamic_scale.numpy()) == 8.0
    assert int(optimizer.spikes.skipped_steps.numpy()) == 1 and int(optimizer.iterations.numpy()) == 3
    optimizer.apply([tf.constant([float("inf")])], [w])  # a non-finite step still halves it
    assert float(scaled.dynamic_scale.numpy()) == 4.0 and int(optimizer.spikes.streak.numpy()) == 2
