"""Rollback: restore the last good weights and optimizer state after a spike or a skip streak, then
leave out the next batches, as PaLM (Chowdhery et al. 2022, §5.1) and the OPT-175B logbook describe.

`RollbackOnSpike` is a Keras callback for a model trained with a `skip_spikes(...)` policy
(`stabilize(model, spikes=skip_spikes(..., on_streak="rollback"))`). It reads the policy's batch logs,
so it costs a host sync per batch, which the logs of `fit` already make.
"""

import os
import tempfile
from typing import Any

import keras
import numpy as np

TRIGGERS = ("streak", "spike")


class RollbackOnSpike(keras.callbacks.Callback):
    """Keeps the last good state every `every_n_steps` steps and rolls back to it when training goes bad.

    The state is the model's weights and every optimizer variable (moments, step count, learning
    rate, transform and spike-policy state), kept in memory or, with `directory`, in
    `directory/last_good_state.npz` (written to a temporary file, then renamed). A state is good when
    the step that ends it was applied (`skip_streak` is 0).

    A rollback happens at the end of a batch whose logs show a skip streak of `max_skip_streak`
    (trigger "streak", by default the policy's `max_consecutive`), or a newly skipped or non-finite
    step (trigger "spike"). It restores the state, scales the learning rate by `learning_rate_factor`,
    and sets the policy's pause so that the next `skip_batches` batches are left out: they are read
    in their place in the epoch's order and not applied, so a rerun with the same seed repeats the
    run exactly. Batches between the restored state and the rollback were seen by the discarded
    weights only, so they are left out too.

    Each rollback is kept in `rollbacks` as `{"batch", "step", "restored_step", "cause",
    "batches_skipped"}`; the batch logs get `rollback` (1.0 at a rollback, else 0.0) and, like the
    epoch logs (hence `History`), `rollbacks`, the count so far.

    Args:
        every_n_steps: keep a good state when the optimizer's step count reaches a multiple of this.
        skip_batches: batches to leave out after a rollback (PaLM: 200 to 500).
        learning_rate_factor: multiplies the learning rate at each rollback (1.0: unchanged); the
            learning rate must then be a number, not a schedule.
        trigger: "streak" or "spike" (see above).
        max_skip_streak: the streak length that triggers a rollback; `None`: the policy's
            `max_consecutive`.
        directory: keep the state on disk there instead of in memory.

    References:
        Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways", arXiv:2204.02311, 2022 (§5.1).
        Zhang et al., "OPT: Open Pre-trained Transformer Language Models", arXiv:2205.01068, 2022 (logbook).

    Example:
        >>> import keras, numpy as np, keras_stability as ks
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
        >>> y = x.sum(axis=1, keepdims=True)
        >>> y[40:48] = 1e4  # batch 5 spikes; the streak of one skipped step triggers a rollback
        >>> spikes = ks.skip_spikes(window=4, min_samples=4, max_consecutive=1, on_streak="rollback")
        >>> model = ks.stabilize(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), spikes=spikes)
        >>> model.compile(keras.optimizers.SGD(0.1), "mse")
        >>> rollback = ks.RollbackOnSpike(every_n_steps=2, skip_batches=1, learning_rate_factor=0.5)
        >>> history = model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[rollback])
        >>> rollback.rollbacks
        [{'batch': 5, 'step': 5, 'restored_step': 4, 'cause': 'skip_streak', 'batches_skipped': 3}]
        >>> # Restored to step 4; batch 6 left out, batch 7 applied at half the learning rate.
        >>> round(float(model.optimizer.learning_rate), 3), int(model.optimizer.iterations)
        (0.05, 5)
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        skip_batches: int = 0,
        learning_rate_factor: float = 1.0,
        trigger: str = "streak",
        max_skip_streak: int | None = None,
        directory: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        for name, value, least in (("every_n_steps", every_n_steps, 1), ("skip_batches", skip_batches, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(
                    f"`{name}` of RollbackOnSpike must be an integer ≥ {least}. Received: {name}={value!r}."
                )
        if isinstance(learning_rate_factor, bool) or not isinstance(learning_rate_factor, (int, float)):
            raise ValueError(
                f"`learning_rate_factor` of RollbackOnSpike must be a number. Received: {learning_rate_factor!r}."
            )
        if not learning_rate_factor > 0:
            raise ValueError(
                "`learning_rate_factor` of RollbackOnSpike must be > 0. "
                f"Received: learning_rate_factor={learning_rate_factor!r}."
            )
        if trigger not in TRIGGERS:
            raise ValueError(
                f"`trigger` of RollbackOnSpike must be one of {', '.join(map(repr, TRIGGERS))}. "
                f"Received: trigger={trigger!r}."
            )
        self.every_n_steps = every_n_steps
        self.skip_batches = skip_batches
        self.learning_rate_factor = float(learning_rate_factor)
        self.trigger = trigger
        self.max_skip_streak = max_skip_streak
        self.directory = None if directory is None else os.fspath(directory)
        self.rollbacks: list[dict[str, Any]] = []
        self._state: list[np.ndarray] | None = None
        self._state_step = 0
        self._previous = {}
        self._seen = 0  # batches read since training began
        self._epoch_start = 0
        self._state_seen = 0

    @property
    def spikes(self):
        return getattr(self.model.optimizer, "spikes", None)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.spikes is None:
            raise ValueError(
                "RollbackOnSpike needs a model trained with a spike policy: "
                "stabilize(model, spikes=skip_spikes(..., on_streak='rollback')). "
                f"Received: a model whose optimizer is {type(self.model.optimizer).__name__} without one."
            )
        if self.trigger == "streak" and self.max_skip_streak is None and self.spikes.max_consecutive is None:
            raise ValueError(
                "RollbackOnSpike(trigger='streak') needs a streak length: set max_skip_streak, or "
                "max_consecutive of skip_spikes. Received: neither."
            )
        # Keras keeps a schedule, or a variable for a number, in `_learning_rate`.
        schedule = self._core()._learning_rate
        if self.learning_rate_factor != 1.0 and isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError(
                "RollbackOnSpike scales the learning rate, which must then be a number, not a schedule. "
                f"Received: learning_rate_factor={self.learning_rate_factor} with a {type(schedule).__name__}."
            )
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self._previous = self._counters()  # a model trained before starts from its own counts
        self._keep_state()

    def _core(self):
        optimizer = self.model.optimizer
        return getattr(optimizer, "core_optimizer", optimizer)

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _keep_state(self) -> None:
        arrays = [np.array(v) for v in self.model.weights] + [np.array(v) for v in self.model.optimizer.variables]
        self._state_step = self._step()
        self._state_seen = self._seen
        if self.directory is None:
            self._state = arrays
            return
        os.makedirs(self.directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.directory, suffix=".npz", delete=False) as stream:
            np.savez(stream, *arrays)
        os.replace(stream.name, os.path.join(self.directory, "last_good_state.npz"))

    def _restore_state(self) -> None:
        if self.directory is None:
            arrays = self._state
        else:
            with np.load(os.path.join(self.directory, "last_good_state.npz")) as stored:
                arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        variables = list(self.model.weights) + list(self.model.optimizer.variables)
        for variable, value in zip(variables, arrays):
            variable.assign(value)

    def _counters(self) -> dict[str, float]:
        """The skip counters a spike trigger watches, as the optimizer holds them now."""
        optimizer = self.model.optimizer
        counters = {"spike_skipped_steps": float(self.spikes.skipped_steps.numpy())}
        if getattr(optimizer, "nonfinite_steps", None) is not None and optimizer.built:
            counters["nonfinite_steps"] = float(optimizer.nonfinite_steps.numpy())
        return counters

    def _cause(self, logs: dict) -> str | None:
        if self.trigger == "streak":
            limit = self.max_skip_streak if self.max_skip_streak is not None else self.spikes.max_consecutive
            return "skip_streak" if logs.get("skip_streak", 0.0) >= limit else None
        for name, cause in (("spike_skipped_steps", "spike"), ("nonfinite_steps", "nonfinite")):
            if logs.get(name, 0.0) > self._previous.get(name, 0.0):
                return cause
        return None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = self._seen

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = {} if logs is None else logs
        # With steps_per_execution > 1, `batch` is the execution's last batch.
        self._seen = self._epoch_start + batch + 1
        cause = self._cause(logs)
        self._previous = {name: logs.get(name, 0.0) for name in ("spike_skipped_steps", "nonfinite_steps")}
        if cause is None:
            step = self._step()
            if (
                logs.get("skip_streak", 0.0) == 0.0
                and step // self.every_n_steps > self._state_step // self.every_n_steps
            ):
                self._keep_state()
            logs.update(rollback=0.0, rollbacks=float(len(self.rollbacks)))
            return
        step = self._step()
        self._restore_state()
        if self.learning_rate_factor != 1.0:
            core = self._core()
            core.learning_rate = float(core.learning_rate) * self.learning_rate_factor
        self.spikes.pause.assign(self.skip_batches)
        # The restored counters are the new baseline: a spike is a counter rising past them.
        self._previous = self._counters()
        self.rollbacks.append(
            {
                "batch": batch,
                "step": step,
                "restored_step": self._state_step,
                "cause": cause,
                # Batches read since the kept state were seen by discarded weights only.
                "batches_skipped": self._seen - self._state_seen + self.skip_batches,
            }
        )
        # A later rollback discards the batches read from here on.
        self._state_seen = self._seen
        logs.update(rollback=1.0, rollbacks=float(len(self.rollbacks)))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["rollbacks"] = float(len(self.rollbacks))
