"""What to do with a step whose (all-reduced) gradient holds a NaN or an infinity.

The test is on the gradient's global norm, one scalar per step: it is non-finite exactly when an
entry is, or when the norm itself overflows float32 (entries beyond ~1e19, which
`tf.clip_by_global_norm` would turn into NaN as well).

- "raise": stop training with tf.errors.InvalidArgumentError;
- "skip": leave variables and optimizer slots untouched this step;
- "zero": apply an all-zero gradient (slots such as momentum still advance);
- "propagate": apply the gradient as it is (what Keras does).
"""

import tensorflow as tf

from keras_stability.transforms import norms
from keras_stability.transforms.base import Gradients

POLICIES = ("raise", "skip", "zero", "propagate")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(
            f"`nonfinite` must be one of {', '.join(repr(p) for p in POLICIES)}. Received: nonfinite={policy!r}."
        )
    return policy


def raise_if_not_finite(finite: tf.Tensor) -> None:
    """Fails the step with tf.errors.InvalidArgumentError when `finite` is false."""
    tf.debugging.check_numerics(
        tf.where(finite, 0.0, float("nan")),
        "keras_stability: non-finite gradient with nonfinite='raise' (use nonfinite='skip' to skip such steps instead)",
    )


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
