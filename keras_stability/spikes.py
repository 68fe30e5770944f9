"""Spike skipping: leave out an update whose loss or gradient norm is an outlier over a rolling window.

`skip_spikes(...)` is given to `StabilizedOptimizer(spikes=...)` (or `stabilize(model, spikes=...)`).
Each step it judges the batch loss and the all-reduced gradient's global norm against the mean and
standard deviation of their last `window` finite values; a step whose value exceeds mean + threshold·std
is skipped like a non-finite one under `nonfinite="skip"`: variables, optimizer moments and the step
count stay as they are. The decision is a tensor inside the training step (no host sync), and the
window is Keras variables saved with the optimizer.

After `max_consecutive` steps in a row left out (spikes, and non-finite steps under "skip"), the
policy escalates: `SkipStreakError` (inside `fit`, through `nonfinite_errors()`), or, with
`on_streak="rollback"`, a `skip_streak` log that `RollbackOnSpike` acts on.
"""

import keras
import tensorflow as tf

from keras_stability.transforms.base import PACKAGE, state_variable

STREAK_ACTIONS = ("raise", "rollback")
# The statistics of the last decision, in this order, as the telemetry names them.
STATISTICS = ("loss_mean", "loss_std", "loss_z", "grad_norm_mean", "grad_norm_std", "grad_norm_z")
# Every log the policy adds to `StabilizedModel`'s training logs.
TELEMETRY = (*(f"spike_{name}" for name in STATISTICS), "spike_skipped_steps", "skip_streak")
STREAK_MESSAGE = (
    "Training left out {count} steps in a row (loss or gradient-norm spikes, or non-finite gradients), "
    "the most skip_spikes(max_consecutive=...) allows; lower the learning rate, or use "
    'on_streak="rollback" with the RollbackOnSpike callback'
)
# What the graph's error carries, to tell it from TensorFlow's other InvalidArgumentErrors.
STREAK_MARKER = "keras_stability: skip streak"


class SkipStreakError(tf.errors.InvalidArgumentError):
    """More consecutive steps left out than `skip_spikes(max_consecutive=...)` allows.

    An `InvalidArgumentError`, as TensorFlow raises from the graph; `nonfinite_errors()` (around
    `StabilizedModel.fit`) turns the graph's error into this one.
    """

    def __init__(self, message: str = STREAK_MESSAGE.format(count="too many")):
        super().__init__(None, None, message)

    def __reduce__(self):  # picklable, so that runner processes (--jobs) can return it
        return type(self), (self.message,)


def window_statistics(history: tf.Tensor, filled: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and Bessel-corrected std of each row's first `filled` entries (0 where undefined)."""
    valid = tf.range(history.shape[1], dtype=filled.dtype)[None, :] < filled[:, None]
    n = tf.cast(filled, history.dtype)
    mean = tf.math.divide_no_nan(tf.reduce_sum(tf.where(valid, history, 0.0), axis=1), n)
    squares = tf.reduce_sum(tf.where(valid, tf.square(history - mean[:, None]), 0.0), axis=1)
    return mean, tf.sqrt(tf.math.divide_no_nan(squares, n - 1.0))


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpikeSkipping:
    """The rolling-window spike test and its state; see `skip_spikes`."""

    def __init__(
        self,
        window: int = 128,
        threshold: float = 6.0,
        min_samples: int | None = None,
        max_consecutive: int | None = None,
        on_streak: str = "raise",
    ) -> None:
        for name, value, least in (("window", window, 2), ("max_consecutive", max_consecutive, 1)):
            if name == "max_consecutive" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"`{name}` of skip_spikes must be an integer ≥ {least}. Received: {name}={value!r}.")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
            raise ValueError(f"`threshold` of skip_spikes must be a number > 0. Received: threshold={threshold!r}.")
        if min_samples is None:
            min_samples = max(20, window // 2)
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or not 2 <= min_samples <= window + 1:
            raise ValueError(
                "`min_samples` of skip_spikes counts the current step and at most `window` before it, so it "
                f"must be an integer in [2, window + 1 = {window + 1}]. Received: min_samples={min_samples!r}."
            )
        if on_streak not in STREAK_ACTIONS:
            raise ValueError(
                f"`on_streak` of skip_spikes must be one of {', '.join(map(repr, STREAK_ACTIONS))}. "
                f"Received: on_streak={on_streak!r}."
            )
        self.window = window
        self.threshold = float(threshold)
        self.min_samples = min_samples
        self.max_consecutive = max_consecutive
        self.on_streak = on_streak
        self.built = False

    def build(self) -> None:
        # Row 0: losses, row 1: gradient norms; each a ring buffer filled at count % window.
        self.history = state_variable("spike_history", (2, self.window))
        self.counts = state_variable("spike_counts", (2,), "int64")
        self.statistics = state_variable("spike_statistics", (len(STATISTICS),))
        self.skipped_steps = state_variable("spike_skipped_steps", (), "int64")
        self.streak = state_variable("skip_streak", (), "int64")
        # Steps still to leave out on purpose (set by `RollbackOnSpike` to skip batches after a rollback).
        self.pause = state_variable("spike_pause", (), "int64")
        self.built = True

    @property
    def variables(self) -> list[keras.Variable]:
        if not self.built:
            return []
        return [self.history, self.counts, self.statistics, self.skipped_steps, self.streak, self.pause]

    def judge(self, loss: tf.Tensor | None, grad_norm: tf.Tensor) -> tf.Tensor:
        """Whether the step may proceed; records its finite loss and norm in the window.

        A value is a spike when value − mean > threshold·std over the window before it (Bessel's
        std), once the window and the current step hold `min_samples` values. While `pause` > 0 every
        step is left out and changes nothing else (see `count_outcome`).
        """
        missing = loss is None
        loss = tf.constant(float("nan")) if missing else tf.cast(tf.reshape(loss, []), tf.float32)
        values = tf.stack([loss, tf.cast(grad_norm, tf.float32)])
        history = tf.convert_to_tensor(self.history)
        counts = tf.convert_to_tensor(self.counts)
        filled = tf.minimum(counts, self.window)
        mean, std = window_statistics(history, filled)
        active = filled + 1 >= self.min_samples
        # NaN compares False: a non-finite value is a spike once the test is active.
        passes = values - mean <= self.threshold * std
        judged = tf.constant([not missing, True])
        proceed = tf.reduce_all(tf.logical_or(tf.logical_not(tf.logical_and(active, judged)), passes))
        paused = self.pause > 0

        recorded = tf.logical_and(tf.logical_and(judged, tf.math.is_finite(values)), tf.logical_not(paused))
        slots = tf.one_hot(counts % self.window, self.window, on_value=True, off_value=False)
        writes = tf.logical_and(slots, recorded[:, None])
        self.history.assign(tf.where(writes, values[:, None], history))
        self.counts.assign(counts + tf.cast(recorded, tf.int64))
        z = tf.math.divide_no_nan(values - mean, std)
        statistics = tf.stack([mean, std, tf.where(tf.math.is_finite(z), z, 0.0)], axis=1)  # (2, 3)
        self.statistics.assign(tf.reshape(tf.where(judged[:, None], statistics, 0.0), [-1]))
        self.skipped_steps.assign_add(
            tf.cast(tf.logical_and(tf.logical_not(proceed), tf.logical_not(paused)), tf.int64)
        )
        return tf.logical_and(proceed, tf.logical_not(paused))

    def count_outcome(self, applied: tf.Tensor) -> None:
        """Updates the streak of steps left out (a paused step counts as neither), and the pause;
        raises `SkipStreakError` past `max_consecutive` (with `on_streak="raise"`)."""
        paused = self.pause > 0
        streak = tf.where(applied, tf.constant(0, tf.int64), self.streak + tf.cast(tf.logical_not(paused), tf.int64))
        self.streak.assign(streak)
        self.pause.assign(tf.maximum(self.pause - 1, 0))
        if self.max_consecutive is not None and self.on_streak == "raise":
            exceeded = streak >= self.max_consecutive
            tf.debugging.check_numerics(
                tf.where(exceeded, float("nan"), 0.0),
                f"{STREAK_MARKER}: {STREAK_MESSAGE.format(count=self.max_consecutive)}",
            )

    def telemetry(self) -> dict[str, tf.Tensor]:
        """`spike_skipped_steps`, `skip_streak` and the last decision's `spike_<statistic>` values."""
        logs = {f"spike_{name}": value for name, value in zip(STATISTICS, tf.unstack(self.statistics))}
        logs["spike_skipped_steps"] = tf.cast(self.skipped_steps, tf.float32)
        logs["skip_streak"] = tf.cast(self.streak, tf.float32)
        return logs

    def get_config(self) -> dict:
        return {
            "window": self.window,
            "threshold": self.threshold,
            "min_samples": self.min_samples,
            "max_consecutive": self.max_consecutive,
            "on_streak": self.on_streak,
        }

    @classmethod
    def from_config(cls, config: dict) -> "SpikeSkipping":
        return cls(**config)

    def __repr__(self) -> str:
        return f"skip_spikes({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


def skip_spikes(
    window: int = 128,
    threshold: float = 6.0,
    min_samples: int | None = None,
    max_consecutive: int | None = None,
    on_streak: str = "raise",
) -> SpikeSkipping:
    """Skips a step whose loss or gradient norm exceeds the rolling mean by `threshold` standard deviations.

    OLMo-core's `SkipStepOptimizer`: with the window's mean μ and Bessel-corrected std σ of the last
    `window` values before the step, the step proceeds when loss − μ_loss ≤ threshold·σ_loss and
    ‖G‖ − μ_norm ≤ threshold·σ_norm (one-sided: a drop is no spike). Until the window and the
    current step hold `min_samples` values (default max(20, window // 2)) every step proceeds.
    Skipped steps' values enter the window, as in the reference. Without a loss (a plain Keras
    `train_step` around `StabilizedOptimizer`), the gradient norm alone is judged.

    Args:
        window: the reference's `rolling_interval_length`.
        threshold: the reference's `sigma_factor`.
        min_samples: values needed before the test starts (the reference: max(20, window // 2)).
        max_consecutive: after this many steps in a row left out, escalate; `None`: never.
        on_streak: "raise" (`SkipStreakError`) or "rollback" (leave it to `RollbackOnSpike`,
            which reads the `skip_streak` log).

    Returns:
        A `SpikeSkipping` policy for `StabilizedOptimizer(spikes=...)`.

    Differences from the reference (allenai/OLMo-core, `optim/skip_step_optimizer.py`): non-finite
    losses and norms do not enter the window (a NaN there would make every later test fail, which
    OLMo-core's later versions also fix), and the step is judged on the all-reduced gradient's
    norm before any transform, as the wrapper sees it.

    Example:
        >>> import keras, numpy as np, keras_stability as ks
        >>> w = keras.Variable([0.0])
        >>> optimizer = ks.StabilizedOptimizer(
        ...     keras.optimizers.SGD(1.0), spikes=ks.skip_spikes(window=4, min_samples=3)
        ... )
        >>> for g in [1.0, 1.1, 0.9, 50.0, 1.0]:  # the norm 50 is far above 1 ± 6·0.1
        ...     optimizer.apply([np.array([g], "float32")], [w])
        >>> float(w[0]), int(optimizer.spikes.skipped_steps), int(optimizer.iterations)
        (-4.0, 1, 4)
    """
    return SpikeSkipping(window, threshold, min_samples, max_consecutive, on_streak)
