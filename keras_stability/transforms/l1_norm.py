"""Clipping by the global L1 norm, the norm that seed document 001's clipping code measures."""

import keras
import tensorflow as tf

from keras_stability.transforms import norms
from keras_stability.transforms.base import PACKAGE, Gradients, GradientTransform, Variables
from keras_stability.transforms.clipping import positive_float


def global_l1_norm(gradients: Gradients) -> tf.Tensor:
    """Σ|g| over every entry of every non-`None` gradient, each taken as its dense tensor, in float32."""
    sums = [
        tf.reduce_sum(tf.abs(tf.cast(norms.values_of(norms.deduplicate(g)), tf.float32)))
        for g in gradients
        if g is not None
    ]
    return tf.add_n(sums) if sums else tf.constant(0.0, tf.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClipByL1Norm(GradientTransform):
    def __init__(self, max_norm: float) -> None:
        super().__init__()
        self.max_norm = positive_float("clip_by_l1_norm", "max_norm", max_norm)

    def transform(self, gradients: Gradients, variables: Variables) -> tuple[Gradients, tf.Tensor]:
        l1 = global_l1_norm(gradients)
        # A non-finite norm leaves the gradients untouched: the non-finite policy decides.
        clip = tf.logical_and(tf.math.is_finite(l1), l1 > self.max_norm)
        factor = tf.where(clip, self.max_norm / l1, 1.0)
        return [norms.scale(g, factor) for g in gradients], clip

    def get_config(self) -> dict:
        return {"max_norm": self.max_norm}


def clip_by_l1_norm(max_norm: float) -> ClipByL1Norm:
    """All tensors: g ← g · max_norm / max(‖G‖₁, max_norm), with ‖G‖₁ = Σ|gᵢ| over every entry.

    Seed document 001's C++ clipping code sums |grad[i]| over the whole gradient vector as its
    "gradient size" and divides the gradient by it; this is that measure used as a clipping
    threshold, the L1 counterpart of `clip_by_global_norm`. Repeated rows of a sparse gradient are
    summed before their absolute values are.
    """
    return ClipByL1Norm(max_norm)
