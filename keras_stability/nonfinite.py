"""What to do with a step whose (all-reduced) gradient holds a NaN or an infinity.

The test is on the gradient's global norm, one scalar per step: it is non-finite exactly when an
entry is, or when the norm itself overflows float32 (entries beyond ~1e19, which
`tf.clip_by_global_norm` would turn into NaN as well).

- "raise": stop training with `NonFiniteGradientError` (`StabilizedModel.fit`, `train_epoch` and the
  runner raise it; around a plain model's `fit` with `StabilizedOptimizer`, `nonfinite_errors()` does);
- "skip": leave variables and optimizer slots untouched this step;
- "zero": apply an all-zero gradient (slots such as momentum still advance);
- "propagate": apply the gradient as it is (what Keras does).
"""

import contextlib

import tensorflow as tf

from keras_stability.spikes import STREAK_MARKER, SkipStreakError
from keras_stability.transforms import norms
from keras_stability.transforms.base import Gradients

POLICIES = ("raise", "skip", "zero", "propagate")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(
            f"`nonfinite` must be one of {', '.join(repr(p) for p in POLICIES)}. Received: nonfinite={policy!r}."
        )
    return policy


MESSAGE = (
    "A training step's gradient holds a NaN or an infinity, and nonfinite='raise' stops training there; "
    "use nonfinite='skip' (or 'zero') to leave such steps out instead"
)
# What the graph's error carries, to tell it from TensorFlow's other InvalidArgumentErrors.
MARKER = "keras_stability: non-finite gradient"


class NonFiniteGradientError(tf.errors.InvalidArgumentError):
    """A non-finite gradient under nonfinite='raise'. An `InvalidArgumentError`, as TensorFlow raises
    from the graph, so code that catches that catches this; its message is the first line shown."""

    def __init__(self, message: str = MESSAGE):
        super().__init__(None, None, message)

    def __reduce__(self):  # picklable, so that runner processes (--jobs) can return it
        return type(self), (self.message,)


@contextlib.contextmanager
def nonfinite_errors():
    """Turns the graph's error of a non-finite gradient under nonfinite='raise' (TensorFlow's
    `InvalidArgumentError: Graph execution error`, the reason buried inside) into `NonFiniteGradientError`,
    and that of a skip streak past `skip_spikes(max_consecutive=...)` into `SkipStreakError`."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        if isinstance(error, (NonFiniteGradientError, SkipStreakError)):
            raise
        message = str(error.message)
        if MARKER in message:
            raise NonFiniteGradientError() from None
        if STREAK_MARKER in message:
            reason = message.split(f"{STREAK_MARKER}: ", 1)[1].split(" : Tensor had NaN values")[0]
            raise SkipStreakError(reason) from None
        raise


def raise_if_not_finite(finite: tf.Tensor) -> None:
    """Fails the step when `finite` is false (`nonfinite_errors` turns it into `NonFiniteGradientError`)."""
    tf.debugging.check_numerics(tf.where(finite, 0.0, float("nan")), f"{MARKER} with nonfinite='raise'")


def zero_if_not_finite(gradients: Gradients, finite: tf.Tensor) -> Gradients:
    """The gradients where `finite`, else zeros of the same structure (NaN * 0 would stay NaN)."""
    result = []
    for g in gradients:
        if g is None:
            result.append(None)
            continue
        values = norms.values_of(g)
        result.append(norms.with_values(g, tf.where(finite, values, tf.zeros_like(values))))
    return result
