"""Gradient regularisation: the gradient replaced by its L1/L2-penalised proximal point."""

import keras
import tensorflow as tf

from keras_stability.transforms import norms
from keras_stability.transforms.base import PACKAGE, Gradients, GradientTransform, Variables, map_per_tensor
from keras_stability.transforms.norms import Gradient


def non_negative_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"`{name}` of regularize_gradient must be a finite number ≥ 0. Received: {name}={value!r}.")
    return float(value)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RegularizeGradient(GradientTransform):
    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        super().__init__()
        self.l1 = non_negative_float("l1", l1)
        self.l2 = non_negative_float("l2", l2)
        if not (self.l1 or self.l2):
            raise ValueError("regularize_gradient needs a penalty: set `l1` or `l2` > 0. Received: l1=0.0, l2=0.0.")

    def transform(self, gradients: Gradients, variables: Variables) -> tuple[Gradients, tf.Tensor]:
        return map_per_tensor(gradients, variables, self.regularize_tensor)

    def regularize_tensor(self, gradient: Gradient, variable: keras.Variable) -> tuple[Gradient, tf.Tensor]:
        gradient = norms.deduplicate(gradient)
        values = norms.values_of(gradient)
        shrunk = tf.sign(values) * tf.maximum(tf.abs(values) - self.l1, 0.0) / (1.0 + self.l2)
        return norms.with_values(gradient, shrunk), tf.reduce_any(tf.not_equal(shrunk, values))

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


def regularize_gradient(l1: float = 0.0, l2: float = 0.0) -> RegularizeGradient:
    """Regularises the gradient itself: g ← argminᵤ ½‖u − g‖² + l1·‖u‖₁ + (l2/2)·‖u‖²₂, per entry
    g ← sign(g) · max(|g| − l1, 0) / (1 + l2) (soft-thresholding, then shrinking).

    Seed document 000 describes "regularising the gradient with L1 or L2 so that its norm stays in a
    reasonable range"; this is that penalty applied to the gradient vector, solved exactly (its
    proximal operator). Every entry moves towards zero, so ‖u‖ ≤ ‖g‖ in any norm; l1 zeroes entries
    with |g| ≤ l1, l2 scales by 1/(1 + l2). The other reading, L1/L2 penalties on the weights, is the
    zoo's `l1`/`l2` model options.
    """
    return RegularizeGradient(l1, l2)
