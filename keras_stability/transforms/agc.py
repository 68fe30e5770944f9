"""Adaptive gradient clipping (AGC), unit-wise over Keras kernel layouts."""

import re

import keras
import tensorflow as tf

from keras_stability.transforms.base import PACKAGE, GradientTransform, map_per_tensor
from keras_stability.transforms.clipping import positive_float


def unit_axes(rank):
    """Axes summed over for one unit's norm; `None` means the whole tensor is one unit.

    Keras keeps the output dimension last (Dense (in, out), Conv2D (kh, kw, in, out)), so a unit is
    one output slice: every axis but the last. Scalars and vectors (biases, norms' scales) are one unit,
    as in the NFNets reference code.
    """
    if rank <= 1:
        return None
    return list(range(rank - 1))


def unitwise_norm(tensor):
    tensor = tf.cast(tensor, tf.float32)
    axes = unit_axes(tensor.shape.rank)
    return tf.sqrt(tf.reduce_sum(tf.square(tensor), axis=axes, keepdims=axes is not None))


def variable_name(variable):
    return getattr(variable, "path", None) or variable.name


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveClip(GradientTransform):
    def __init__(self, clip_factor=0.01, eps=1e-3, exclude=()):
        super().__init__()
        self.clip_factor = positive_float("adaptive_clip", "clip_factor", clip_factor)
        self.eps = positive_float("adaptive_clip", "eps", eps)
        if isinstance(exclude, str):
            exclude = (exclude,)
        self.exclude = tuple(exclude)
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as error:
                raise ValueError(
                    "`exclude` of adaptive_clip takes regular expressions matched against variable "
                    f"paths such as 'dense_2/kernel'. Received: exclude={exclude!r} ({error})."
                ) from None

    def is_excluded(self, variable):
        name = variable_name(variable)
        return any(re.search(pattern, name) for pattern in self.exclude)

    def transform(self, gradients, variables):
        return map_per_tensor(gradients, variables, self.clip_tensor)

    def clip_tensor(self, gradient, variable):
        if self.is_excluded(variable):
            return gradient, False
        # AGC needs per-unit norms of the whole gradient, so sparse gradients are densified.
        gradient = tf.convert_to_tensor(gradient)
        max_norm = self.clip_factor * tf.maximum(unitwise_norm(tf.convert_to_tensor(variable)), self.eps)
        # max(‖G_i‖, 1e-6) only prevents division by zero; such units are never clipped.
        grad_norm = unitwise_norm(gradient)
        factor = tf.where(grad_norm > max_norm, max_norm / tf.maximum(grad_norm, 1e-6), 1.0)
        return gradient * tf.cast(factor, gradient.dtype), tf.reduce_any(grad_norm > max_norm)

    def get_config(self):
        return {"clip_factor": self.clip_factor, "eps": self.eps, "exclude": list(self.exclude)}


def adaptive_clip(clip_factor=0.01, eps=1e-3, exclude=()):
    """Adaptive gradient clipping: per unit i, G_i ← G_i · λ·max(‖W_i‖, ε)/‖G_i‖ when that ratio is < 1.

    A unit is an output slice of a Keras kernel (a Dense column, a Conv filter); biases and other vectors
    are one unit each.

    Args:
        clip_factor: λ, the largest allowed ‖G_i‖ / max(‖W_i‖, ε).
        eps: ε, keeps zero-initialised parameters (biases) from being frozen.
        exclude: regular expressions; variables whose path matches one (e.g. the classifier head,
            ``exclude=["predictions"]``, as NFNets do) are left unclipped.

    Reference: Brock, De, Smith & Simonyan, "High-Performance Large-Scale Image Recognition Without
    Normalization", ICML 2021.
    """
    return AdaptiveClip(clip_factor, eps, exclude)
