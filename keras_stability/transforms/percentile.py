"""Percentile clipping (AutoClip): clip the global norm to a percentile of the norms seen so far."""

import keras
import tensorflow as tf

from keras_stability.transforms.base import PACKAGE, GlobalNormTransform, Gradients, Variables, state_variable
from keras_stability.transforms.clipping import scale_by_global_norm


def percentile_of_filled(history: tf.Tensor, filled: tf.Tensor, percentile: float) -> tf.Tensor:
    """`np.percentile(history[:filled], percentile)` (linear interpolation) with static shapes.

    Unfilled slots become +inf so they sort last; that keeps the graph XLA-compilable.
    """
    size = history.shape[0]
    slots = tf.range(size)
    ordered = tf.sort(tf.where(slots < filled, history, float("inf")))
    rank = percentile / 100.0 * tf.cast(filled - 1, tf.float32)
    lower = tf.cast(tf.floor(rank), tf.int32)
    upper = tf.cast(tf.math.ceil(rank), tf.int32)
    low_value, high_value = tf.gather(ordered, lower), tf.gather(ordered, upper)
    # Where lower == upper the difference is 0; skip it so inf - inf never appears.
    delta = tf.where(upper > lower, high_value - low_value, 0.0)
    return low_value + delta * (rank - tf.cast(lower, tf.float32))


@keras.saving.register_keras_serializable(package=PACKAGE)
class AutoClip(GlobalNormTransform):
    def __init__(self, percentile: float = 10.0, history: int = 1000) -> None:
        super().__init__()
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile <= 100:
            raise ValueError(f"`percentile` of autoclip must be in [0, 100]. Received: percentile={percentile!r}.")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"`history` of autoclip must be an integer ≥ 1. Received: history={history!r}.")
        self.percentile = float(percentile)
        self.history = history

    def build(self, variables: Variables) -> None:
        self.norm_history = state_variable("autoclip_norm_history", (self.history,))
        self.observed = state_variable("autoclip_observed", (), "int32")
        self.built = True

    @property
    def variables(self) -> list[keras.Variable]:
        return [self.norm_history, self.observed] if self.built else []

    def transform_measured(
        self, gradients: Gradients, variables: Variables, norm: tf.Tensor
    ) -> tuple[Gradients, tf.Tensor, tf.Tensor]:
        finite = tf.math.is_finite(norm)
        # A non-finite norm is not recorded: one overflow would otherwise set the threshold forever.
        slot = tf.math.floormod(self.observed, self.history)
        self.norm_history.assign(
            tf.where(
                tf.logical_and(finite, tf.range(self.history) == slot),
                norm,
                self.norm_history,
            )
        )
        self.observed.assign(self.observed + tf.cast(finite, tf.int32))
        filled = tf.minimum(self.observed, self.history)
        threshold = tf.where(
            filled > 0,
            percentile_of_filled(self.norm_history, tf.maximum(filled, 1), self.percentile),
            float("inf"),
        )
        return scale_by_global_norm(gradients, norm, threshold)

    def get_config(self) -> dict:
        return {"percentile": self.percentile, "history": self.history}


def autoclip(percentile: float = 10.0, history: int = 1000) -> AutoClip:
    """AutoClip: record ‖G‖ each step, then clip the global norm to the `percentile`-th percentile of
    the last `history` recorded norms (this step's included).

    The history is a fixed-size ring buffer in a Keras variable, so it is checkpointed and works under
    `tf.function` and `jit_compile=True`. Non-finite norms are never recorded.

    Reference: Seetharaman, Wichern, Pardo & Le Roux, "AutoClip: Adaptive Gradient Clipping for Source
    Separation Networks", MLSP 2020 (the paper keeps the whole history; `history` bounds it).
    """
    return AutoClip(percentile, history)
