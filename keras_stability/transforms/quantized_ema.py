"""Quantise-then-average clipping: clipped, quantised gradients smoothed by a bias-corrected EMA."""

import keras
import tensorflow as tf

from keras_stability.transforms import norms
from keras_stability.transforms.base import PACKAGE, Gradients, GradientTransform, Variables, state_variable
from keras_stability.transforms.clipping import positive_float


def dense(gradient: norms.Gradient, variable: keras.Variable) -> tf.Tensor:
    """The dense tensor a gradient stands for (repeated sparse rows summed)."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.math.unsorted_segment_sum(gradient.values, gradient.indices, variable.shape[0])
    return gradient


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedEmaClip(GradientTransform):
    def __init__(self, limit: float, levels: int = 127, decay: float = 0.9) -> None:
        super().__init__()
        self.limit = positive_float("quantized_ema_clip", "limit", limit)
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"`levels` of quantized_ema_clip must be an integer ≥ 1. Received: levels={levels!r}.")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ValueError(f"`decay` of quantized_ema_clip must be in [0, 1). Received: decay={decay!r}.")
        self.levels = levels
        self.decay = float(decay)

    def build(self, variables: Variables) -> None:
        self.averages = [
            state_variable(f"quantized_ema_{index}", tuple(variable.shape)) for index, variable in enumerate(variables)
        ]
        self.steps = state_variable("quantized_ema_steps", (), "int32")
        self.built = True

    @property
    def variables(self) -> list[keras.Variable]:
        return [*self.averages, self.steps] if self.built else []

    def quantize(self, gradient: tf.Tensor) -> tf.Tensor:
        step = self.limit / self.levels
        return tf.round(tf.clip_by_value(gradient, -self.limit, self.limit) / step) * step

    def transform(self, gradients: Gradients, variables: Variables) -> tuple[Gradients, tf.Tensor]:
        present = [(g, v, m) for g, v, m in zip(gradients, variables, self.averages) if g is not None]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(norms.values_of(g))) for g, _, _ in present])
        # A non-finite step changes no state (it would poison the average for good) and passes through.
        steps = self.steps + tf.cast(finite, tf.int32)
        correction = 1.0 - tf.pow(self.decay, tf.cast(tf.maximum(steps, 1), tf.float32))
        outputs, changed = {}, []
        for g, variable, average in present:
            raw = tf.cast(dense(g, variable), tf.float32)
            new_average = tf.where(finite, self.decay * average + (1.0 - self.decay) * self.quantize(raw), average)
            average.assign(new_average)
            smoothed = tf.where(finite, new_average / correction, raw)
            outputs[id(g)] = tf.cast(smoothed, norms.values_of(g).dtype)
            changed.append(tf.reduce_any(tf.not_equal(smoothed, raw)))
        self.steps.assign(steps)
        new_gradients = [None if g is None else outputs[id(g)] for g in gradients]
        return new_gradients, tf.reduce_any(tf.stack(changed)) if changed else tf.constant(False)

    def get_config(self) -> dict:
        return {"limit": self.limit, "levels": self.levels, "decay": self.decay}


def quantized_ema_clip(limit: float, levels: int = 127, decay: float = 0.9) -> QuantizedEmaClip:
    """Clips each entry to [-limit, limit], rounds it to the nearest multiple of limit / levels, and
    returns the bias-corrected exponential average of those quantised gradients:
    m ← decay·m + (1 − decay)·q,  g ← m / (1 − decayᵗ)  (t counts finite steps).

    Seed document 000 describes clipping that "quantises the gradient into a reasonable range, the
    quantised gradient then obtained by an exponentially weighted sum"; it gives no formula. This
    reading uses a uniform grid of 2·levels + 1 values and Adam's bias correction, so the first step
    returns q itself. The averages are Keras variables, one per model variable (checkpointed, and
    updated inside `tf.function` and XLA); a sparse gradient becomes the dense tensor it stands for,
    since its average changes every row. Non-finite steps leave the state untouched.
    """
    return QuantizedEmaClip(limit, levels, decay)
