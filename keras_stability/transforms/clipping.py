"""Fixed-threshold clipping: by value, per-tensor norm, global norm, and the normalized gradient."""

import keras
import tensorflow as tf

from keras_stability.transforms import norms
from keras_stability.transforms.base import (
    PACKAGE,
    GlobalNormTransform,
    Gradients,
    GradientTransform,
    Variables,
    map_per_tensor,
)
from keras_stability.transforms.norms import Gradient


def positive_float(owner: str, name: str, value: object) -> float:
    """`float(value)` if it is a finite number > 0, else a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ValueError(f"`{name}` of {owner} must be a finite number > 0. Received: {name}={value!r}.")
    return float(value)


def scale_by_global_norm(
    gradients: Gradients, global_norm: tf.Tensor, max_norm: float
) -> tuple[Gradients, tf.Tensor, tf.Tensor]:
    """Rescales all gradients by min(1, max_norm / global_norm).

    Returns them, whether they changed, and their new global norm. A non-finite `global_norm` leaves
    the gradients untouched: the non-finite policy decides. An infinite `max_norm` means no clipping.
    """
    clip = tf.logical_and(tf.math.is_finite(global_norm), global_norm > max_norm)
    factor = tf.where(clip, max_norm / global_norm, 1.0)
    return [norms.scale(g, factor) for g in gradients], clip, global_norm * factor


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClipByValue(GradientTransform):
    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = positive_float("clip_by_value", "limit", limit)

    def transform(self, gradients: Gradients, variables: Variables) -> tuple[Gradients, tf.Tensor]:
        return map_per_tensor(gradients, variables, self.clip_tensor)

    def clip_tensor(self, gradient: Gradient, variable: keras.Variable) -> tuple[Gradient, tf.Tensor]:
        # Clip the dense gradient: repeated sparse rows must be summed before clipping.
        gradient = norms.deduplicate(gradient)
        values = norms.values_of(gradient)
        clipped = norms.with_values(gradient, tf.clip_by_value(values, -self.limit, self.limit))
        return clipped, tf.reduce_any(tf.abs(values) > self.limit)

    def get_config(self) -> dict:
        return {"limit": self.limit}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClipByNorm(GradientTransform):
    def __init__(self, max_norm: float) -> None:
        super().__init__()
        self.max_norm = positive_float("clip_by_norm", "max_norm", max_norm)

    def transform(self, gradients: Gradients, variables: Variables) -> tuple[Gradients, tf.Tensor]:
        return map_per_tensor(gradients, variables, self.clip_tensor)

    def clip_tensor(self, gradient: Gradient, variable: keras.Variable) -> tuple[Gradient, tf.Tensor]:
        norm = norms.tensor_norm(gradient)
        values = norms.values_of(gradient)
        # tf.clip_by_norm's formula, x * c / max(‖x‖, c), so results match it bit for bit.
        denominator = tf.where(tf.math.is_finite(norm), tf.maximum(norm, self.max_norm), self.max_norm)
        return norms.with_values(gradient, values * self.max_norm / denominator), norm > self.max_norm

    def get_config(self) -> dict:
        return {"max_norm": self.max_norm}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClipByGlobalNorm(GlobalNormTransform):
    def __init__(self, max_norm: float) -> None:
        super().__init__()
        self.max_norm = positive_float("clip_by_global_norm", "max_norm", max_norm)

    def transform_measured(
        self, gradients: Gradients, variables: Variables, global_norm: tf.Tensor
    ) -> tuple[Gradients, tf.Tensor, tf.Tensor]:
        return scale_by_global_norm(gradients, global_norm, self.max_norm)

    def get_config(self) -> dict:
        return {"max_norm": self.max_norm}


@keras.saving.register_keras_serializable(package=PACKAGE)
class NormalizeGradient(GlobalNormTransform):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = positive_float("normalize_gradient", "scale", scale)

    def transform_measured(
        self, gradients: Gradients, variables: Variables, global_norm: tf.Tensor
    ) -> tuple[Gradients, tf.Tensor, tf.Tensor]:
        # max(‖g‖, tiny) only prevents 0/0 for an all-zero gradient, which stays zero.
        factor = self.scale / tf.maximum(global_norm, 1e-30)
        factor = tf.where(tf.math.is_finite(global_norm), factor, 1.0)
        scaled = [norms.scale(g, factor) for g in gradients]
        return scaled, tf.not_equal(global_norm, self.scale), global_norm * factor

    def get_config(self) -> dict:
        return {"scale": self.scale}


def clip_by_value(limit: float) -> ClipByValue:
    """Clips every gradient entry to [-limit, limit] (= `tf.clip_by_value`).

    Sparse gradients are clipped as the dense tensor they stand for (repeated rows summed first).
    """
    return ClipByValue(limit)


def clip_by_norm(max_norm: float) -> ClipByNorm:
    """Per tensor: g ← g · max_norm / max(‖g‖₂, max_norm) (= `tf.clip_by_norm`, Keras `clipnorm`).

    Unlike `tf.clip_by_norm`, ‖g‖ of an `IndexedSlices` gradient is the norm of the dense gradient.
    """
    return ClipByNorm(max_norm)


def clip_by_global_norm(max_norm: float) -> ClipByGlobalNorm:
    """All tensors: g ← g · max_norm / max(‖G‖₂, max_norm), ‖G‖² = Σ‖g‖² (= `tf.clip_by_global_norm`).

    Reference: Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural networks",
    ICML 2013.
    """
    return ClipByGlobalNorm(max_norm)


def normalize_gradient(scale: float) -> NormalizeGradient:
    """The normalized-gradient rule: g ← g / ‖G‖₂ · scale, so every step has global norm `scale`.

    An all-zero gradient stays zero. With SGD at learning rate η the step length is exactly η·scale.
    """
    return NormalizeGradient(scale)
