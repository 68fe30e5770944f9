"""RollbackOnSpike against Keras's own optimizer run on the batches a rollback keeps: the restored
weights and Adam moments, the left-out batches, the scaled learning rate, the records and logs."""

import keras
import numpy as np
import pytest

import keras_stability as ks

BATCH = 8


def spiking_data():
    """64 samples, 8 batches; batch 5 spikes."""
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True) + 0.1
    y[40:48] = 1e4
    return x, y


def dense():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


def train_with_rollback(directory=None, trigger="streak", callbacks=()):
    x, y = spiking_data()
    spikes = ks.skip_spikes(window=4, min_samples=4, max_consecutive=1, on_streak="rollback")
    model = ks.stabilize(dense(), spikes=spikes)
    model.compile(keras.optimizers.Adam(0.1), "mse")
    rollback = ks.RollbackOnSpike(
        every_n_steps=2, skip_batches=1, learning_rate_factor=0.5, trigger=trigger, directory=directory
    )
    history = model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[rollback, *callbacks])
    return model, rollback, history.history


def kept_batches_run():
    """Keras's Adam alone: batches 0-3 (the state kept at step 4), then batch 7 at half the rate
    (batches 4 and 5 were discarded by the rollback, batch 6 left out on purpose)."""
    x, y = spiking_data()
    model = dense()
    optimizer = keras.optimizers.Adam(0.1)
    model.compile(optimizer, "mse")
    for batch in range(4):
        model.train_on_batch(x[batch * BATCH : (batch + 1) * BATCH], y[batch * BATCH : (batch + 1) * BATCH])
    optimizer.learning_rate = 0.05
    model.train_on_batch(x[7 * BATCH :], y[7 * BATCH :])
    return model, optimizer


@pytest.mark.parametrize("on_disk", [False, True])
def test_rollback_restores_the_kept_state_and_leaves_out_the_next_batches(on_disk, tmp_path):
    model, rollback, _ = train_with_rollback(directory=tmp_path if on_disk else None)
    reference, optimizer = kept_batches_run()
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    inner = model.optimizer.inner_optimizer
    for ours, theirs in zip(inner.variables, optimizer.variables):
        np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-6)
    assert int(inner.iterations.numpy()) == 5
    assert rollback.rollbacks == [
        {"batch": 5, "step": 5, "restored_step": 4, "cause": "skip_streak", "batches_skipped": 3}
    ]
    assert (tmp_path / "last_good_state.npz").exists() == on_disk


def test_rollback_is_recorded_in_batch_and_epoch_logs():
    flags = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: flags.append(logs["rollback"]))
    _, _, history = train_with_rollback(callbacks=[record])
    assert flags == [0.0] * 5 + [1.0, 0.0, 0.0]
    assert history["rollbacks"] == [1.0]


def test_spike_trigger_rolls_back_at_the_first_skipped_step():
    _, rollback, _ = train_with_rollback(trigger="spike")
    assert [(r["batch"], r["cause"]) for r in rollback.rollbacks] == [(5, "spike")]


def test_spike_trigger_counts_from_the_counters_the_model_already_has():
    # A fit that starts with skipped steps already counted: only a new skip is a spike.
    model, rollback, _ = train_with_rollback(trigger="spike")
    x, y = spiking_data()
    y[40:48] = x[40:48].sum(axis=1, keepdims=True) + 0.1
    model.optimizer.spikes.skipped_steps.assign(3)  # steps the model skipped before this fit
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[rollback])
    assert [(r["batch"], r["cause"]) for r in rollback.rollbacks] == [(5, "spike")]


def test_rollback_runs_are_reproducible():
    first, first_rollback, _ = train_with_rollback()
    second, second_rollback, _ = train_with_rollback()
    assert first_rollback.rollbacks == second_rollback.rollbacks
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_rollback_needs_a_spike_policy():
    model = ks.stabilize(dense())
    model.compile(keras.optimizers.SGD(0.1), "mse")
    with pytest.raises(ValueError, match="needs a model trained with a spike policy"):
        model.fit(np.ones((8, 2)), np.ones((8, 1)), verbose=0, callbacks=[ks.RollbackOnSpike()])


def test_rollback_refuses_to_scale_a_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    model = ks.stabilize(dense(), spikes=ks.skip_spikes(window=4, min_samples=4, max_consecutive=2))
    model.compile(keras.optimizers.SGD(schedule), "mse")
    with pytest.raises(ValueError, match="must then be a number, not a schedule"):
        model.fit(np.ones((8, 2)), np.ones((8, 1)), verbose=0, callbacks=[ks.RollbackOnSpike(learning_rate_factor=0.5)])


def test_streak_trigger_needs_a_streak_length():
    model = ks.stabilize(dense(), spikes=ks.skip_spikes(window=4, min_samples=4))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    with pytest.raises(ValueError, match="needs a streak length"):
        model.fit(np.ones((8, 2)), np.ones((8, 1)), verbose=0, callbacks=[ks.RollbackOnSpike()])


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"every_n_steps": 0}, "`every_n_steps` of RollbackOnSpike must be an integer ≥ 1. Received: every_n_steps=0."),
        ({"skip_batches": -1}, "`skip_batches` of RollbackOnSpike must be an integer ≥ 0. Received: skip_batches=-1."),
        ({"learning_rate_factor": 0.0}, "must be > 0. Received: learning_rate_factor=0.0."),
        (
            {"trigger": "loss"},
            "`trigger` of RollbackOnSpike must be one of 'streak', 'spike'. Received: trigger='loss'.",
        ),
    ],
)
def test_rollback_refuses_bad_arguments(arguments, message):
    with pytest.raises(ValueError) as error:
        ks.RollbackOnSpike(**arguments)
    assert message in str(error.value)
