"""Adaptive gradient clipping (AGC), unit-wise over Keras kernel layouts."""

import re

import keras
import tensorflow as tf

from keras_stability.transforms.base import PACKAGE, GradientTransform, map_per_tensor
from keras_stability.transforms.clipping import positive_float

# Keras's MultiHeadAttention keeps query/key/value kernels as (d_model, heads, head_dim): the input
# axis alone is summed, one unit per (head, head_dim) output, as NFNets and optax do for multi-head
# linear layers. Its output kernel, (heads, head_dim, d_model), follows the general rule.
MULTI_HEAD_UNIT_AXES = {r"(query|key|value)/kernel$": [0]}


def unit_axes(rank: int) -> list[int] | None:
    """Axes summed over for one unit's norm; `None` means the whole tensor is one unit.

    Keras keeps the output dimension last (Dense (in, out), Conv1D (k, in, out), Conv2D (kh, kw, in,
    out)), so a unit is one output slice: every axis but the last. Scalars and vectors (biases, norms'
    scales) are one unit, as in the NFNets reference code.
    """
    if rank <= 1:
        return None
    return list(range(rank - 1))


def unitwise_norm(tensor: tf.Tensor, axes: list[int] | None = None) -> tf.Tensor:
    """Per-unit L2 norms summed over `axes` (default `unit_axes`), broadcastable against `tensor`."""
    tensor = tf.cast(tensor, tf.float32)
    if axes is None:
        axes = unit_axes(tensor.shape.rank)
    return tf.sqrt(tf.reduce_sum(tf.square(tensor), axis=axes, keepdims=axes is not None))


def variable_name(variable) -> str:
    return getattr(variable, "path", None) or variable.name


def check_patterns(patterns, argument: str) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as error:
            raise ValueError(
                f"`{argument}` of adaptive_clip takes regular expressions matched against variable "
                f"paths such as 'dense_2/kernel'. Received: {argument}={patterns!r} ({error})."
            ) from None


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveClip(GradientTransform):
    def __init__(
        self,
        clip_factor: float = 0.01,
        eps: float = 1e-3,
        exclude: str | list[str] | tuple[str, ...] = (),
        unit_axes: dict[str, list[int]] | None = None,
    ) -> None:
        super().__init__()
        self.clip_factor = positive_float("adaptive_clip", "clip_factor", clip_factor)
        self.eps = positive_float("adaptive_clip", "eps", eps)
        if isinstance(exclude, str):
            exclude = (exclude,)
        self.exclude = tuple(exclude)
        check_patterns(self.exclude, "exclude")
        self.unit_axes = dict(MULTI_HEAD_UNIT_AXES if unit_axes is None else unit_axes)
        check_patterns(list(self.unit_axes), "unit_axes")
        for pattern, axes in self.unit_axes.items():
            if not isinstance(axes, (list, tuple)) or not all(
                isinstance(a, int) and not isinstance(a, bool) for a in axes
            ):
                raise ValueError(
                    "`unit_axes` of adaptive_clip maps path patterns to lists of axes to sum over, such as "
                    f"{{'query/kernel$': [0]}}. Received: {pattern!r}: {axes!r}."
                )

    def is_excluded(self, variable) -> bool:
        name = variable_name(variable)
        return any(re.search(pattern, name) for pattern in self.exclude)

    def axes_of(self, variable) -> list[int] | None:
        """The reduction axes for `variable`: the first matching `unit_axes` pattern, else `unit_axes(rank)`."""
        name = variable_name(variable)
        for pattern, axes in self.unit_axes.items():
            if re.search(pattern, name):
                return list(axes)
        return unit_axes(len(variable.shape))

    def transform(self, gradients: list, variables: list) -> tuple:
        return map_per_tensor(gradients, variables, self.clip_tensor)

    def clip_tensor(self, gradient, variable) -> tuple:
        if self.is_excluded(variable):
            return gradient, False
        # AGC needs per-unit norms of the whole gradient, so sparse gradients are densified.
        gradient = tf.convert_to_tensor(gradient)
        axes = self.axes_of(variable)
        max_norm = self.clip_factor * tf.maximum(unitwise_norm(tf.convert_to_tensor(variable), axes), self.eps)
        # max(‖G_i‖, 1e-6) only prevents division by zero; such units are never clipped.
        grad_norm = unitwise_norm(gradient, axes)
        factor = tf.where(grad_norm > max_norm, max_norm / tf.maximum(grad_norm, 1e-6), 1.0)
        return gradient * tf.cast(factor, gradient.dtype), tf.reduce_any(grad_norm > max_norm)

    def get_config(self) -> dict:
        return {
            "clip_factor": self.clip_factor,
            "eps": self.eps,
            "exclude": list(self.exclude),
            "unit_axes": {k: list(v) for k, v in self.unit_axes.items()},
        }


def adaptive_clip(
    clip_factor: float = 0.01,
    eps: float = 1e-3,
    exclude: str | list[str] | tuple[str, ...] = (),
    unit_axes: dict[str, list[int]] | None = None,
) -> AdaptiveClip:
    """Adaptive gradient clipping: per unit i, G_i ← G_i · λ·max(‖W_i‖, ε)/‖G_i‖ when that ratio is < 1.

    A unit is an output slice of a Keras kernel (a Dense column, a Conv filter): the norm sums every
    axis but the last. Biases and other vectors are one unit each.

    Args:
        clip_factor: λ, the largest allowed ‖G_i‖ / max(‖W_i‖, ε).
        eps: ε, keeps zero-initialised parameters (biases) from being frozen.
        exclude: regular expressions; variables whose path matches one (e.g. the classifier head,
            ``exclude=["predictions"]``, as NFNets do) are left unclipped.
        unit_axes: regular expression → the axes to sum for variables whose path matches (the first
            match wins). The default, `MULTI_HEAD_UNIT_AXES`, sums only the input axis of
            `MultiHeadAttention`'s query/key/value kernels (d_model, heads, head_dim), so each head
            keeps its own units, as in NFNets and optax; `{}` treats them like any kernel.

    Reference: Brock, De, Smith & Simonyan, "High-Performance Large-Scale Image Recognition Without
    Normalization", ICML 2021.
    """
    return AdaptiveClip(clip_factor, eps, exclude, unit_axes)
