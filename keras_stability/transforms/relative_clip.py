"""AdaGC: each tensor's gradient clipped relative to an EMA of its own clipped norm, after a global warm-up."""

import keras
import tensorflow as tf

from keras_stability.transforms import norms
from keras_stability.transforms.base import PACKAGE, Gradients, GradientTransform, Variables, state_variable
from keras_stability.transforms.clipping import positive_float


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaGC(GradientTransform):
    def __init__(
        self,
        clip_ratio: float = 1.04,
        beta: float = 0.99,
        warmup: int = 100,
        max_norm: float = 1.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.clip_ratio = positive_float("adagc", "clip_ratio", clip_ratio)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
            raise ValueError(f"`beta` of adagc must be in [0, 1). Received: beta={beta!r}.")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"`warmup` of adagc must be an integer ≥ 0. Received: warmup={warmup!r}.")
        self.beta = float(beta)
        self.warmup = warmup
        self.max_norm = positive_float("adagc", "max_norm", max_norm)
        self.eps = positive_float("adagc", "eps", eps)

    def build(self, variables: Variables) -> None:
        self.index = {id(v): i for i, v in enumerate(variables)}
        self.steps = state_variable("adagc_steps", (), "int64")
        self.norms = state_variable("adagc_norms", (len(variables),))
        self.built = True

    @property
    def variables(self) -> list:
        return [self.steps, self.norms] if self.built else []

    def position(self, variable: keras.Variable) -> int:
        """The variable's slot in the state: its position among the variables the transform was built for."""
        if id(variable) not in self.index:
            raise ValueError(
                "adagc keeps one norm per variable it was built for, and got a gradient for another. "
                f"Received: {getattr(variable, 'path', variable)!r}. Build the transform (or the optimizer) "
                "with the model's trainable variables."
            )
        return self.index[id(variable)]

    def transform(self, gradients: Gradients, variables: Variables) -> tuple[Gradients, tf.Tensor]:
        new_gradients, changed, _ = self.transform_measured(gradients, variables, norms.global_norm(gradients))
        return new_gradients, changed

    def transform_measured(self, gradients: Gradients, variables: Variables, global_norm: tf.Tensor) -> tuple:
        present = [(self.position(v), g) for g, v in zip(gradients, variables) if g is not None]
        if not present:
            return gradients, tf.constant(False), global_norm
        positions = tf.constant([i for i, _ in present])
        tensor_norms = tf.stack([norms.tensor_norm(g) for _, g in present])
        step = self.steps + 1
        in_warmup = step <= self.warmup
        # The reference's state starts at the first step's norm, whichever phase that step is in.
        average = tf.where(step == 1, tensor_norms, tf.gather(self.norms, positions))

        # Warm-up: clip the global norm to max_norm; each tensor's state is the least clipped norm seen.
        global_factor = tf.minimum(self.max_norm / (global_norm + self.eps), 1.0)
        warm_norms = tensor_norms * global_factor
        warm_state = tf.minimum(average, warm_norms)

        # Then: a tensor above clip_ratio·EMA is scaled down to it; the EMA follows the clipped norm.
        limit = self.clip_ratio * average
        clipped = tensor_norms > limit
        tensor_factors = tf.where(clipped, limit / (tensor_norms + self.eps), 1.0)
        adaptive_norms = tf.where(clipped, limit, tensor_norms)
        adaptive_state = self.beta * average + (1.0 - self.beta) * adaptive_norms

        factors = tf.where(in_warmup, tf.fill(tf.shape(tensor_norms), global_factor), tensor_factors)
        new_state = tf.where(in_warmup, warm_state, adaptive_state)
        # A non-finite gradient changes no state: it would poison the EMA for good. A step with one is
        # not counted either, so that a non-finite first step leaves the state to the next one.
        finite = tf.math.is_finite(tensor_norms)
        kept = tf.where(finite, new_state, tf.gather(self.norms, positions))
        self.norms.assign(tf.tensor_scatter_nd_update(tf.convert_to_tensor(self.norms), positions[:, None], kept))
        self.steps.assign(tf.where(tf.reduce_all(finite), step, self.steps))

        scaled = iter([norms.scale(g, factors[k]) for k, (_, g) in enumerate(present)])
        new_gradients = [None if g is None else next(scaled) for g in gradients]
        changed = tf.reduce_any(factors < 1.0)
        return new_gradients, changed, tf.sqrt(tf.reduce_sum(tf.square(tensor_norms * factors)))

    def get_config(self) -> dict:
        return {
            "clip_ratio": self.clip_ratio,
            "beta": self.beta,
            "warmup": self.warmup,
            "max_norm": self.max_norm,
            "eps": self.eps,
        }


def adagc(
    clip_ratio: float = 1.04, beta: float = 0.99, warmup: int = 100, max_norm: float = 1.0, eps: float = 1e-6
) -> AdaGC:
    """AdaGC: clips each tensor's gradient to `clip_ratio` times an EMA of its own past (clipped) norms.

    Step t ≤ `warmup` (global clipping): all gradients are scaled by min(1, max_norm / (‖G‖ + eps)),
    and each tensor's state γᵢ is the least of its clipped norms ‖ĝᵢ‖ so far. Step t > `warmup`: a
    tensor with ‖gᵢ‖ > clip_ratio·γᵢ is scaled by clip_ratio·γᵢ / (‖gᵢ‖ + eps), and
    γᵢ ← β·γᵢ + (1 − β)·min(‖gᵢ‖, clip_ratio·γᵢ). With `warmup=0` γᵢ starts at the first norm.

    Args:
        clip_ratio: λ_rel, how far above its EMA a tensor's norm may go.
        beta: β, the EMA's decay.
        warmup: the number of first steps clipped globally (the reference's `start_clip_steps`).
        max_norm: the warm-up's global-norm threshold (Megatron's `--clip-grad`, 1.0 by default).
        eps: added to the norms the factors divide by.

    Returns:
        An `AdaGC` transform; its state (step count and one γ per variable) is saved with the optimizer.

    Follows the reference (lishuai-97/AdaGC, Megatron patch, `AdaGC` with `shard_tensor_clip=False`)
    and its defaults. Differences: a tensor with a non-finite norm keeps its γ (under
    `nonfinite="skip"` such steps never reach the transform), and the step count is the transform's
    own, counting the steps it was applied on with finite norms only (a non-finite first step leaves
    the state to start at the next). pytorch_optimizer's `AdaGC` optimizer uses other
    defaults (λ_rel 1.05, β 0.98, 99 warm-up steps) and no eps in the relative phase. A tensor whose
    gradient is exactly zero during the warm-up keeps γ = 0, so it is clipped to zero afterwards, as
    in the reference.

    References:
        Wang et al., "AdaGC: Improving Training Stability for Large Language Model Pretraining",
        arXiv:2502.11034, 2025.

    Example:
        >>> import keras, numpy as np, keras_stability as ks
        >>> w = keras.Variable([0.0, 0.0])
        >>> optimizer = ks.StabilizedOptimizer(keras.optimizers.SGD(1.0), ks.adagc(warmup=1, eps=1e-12))
        >>> optimizer.apply([np.array([3.0, 4.0], "float32")], [w])  # warm-up: norm 5 clipped to 1, γ = 1
        >>> optimizer.apply([np.array([30.0, 40.0], "float32")], [w])  # 50 > 1.04·γ: clipped to 1.04
        >>> np.round(keras.ops.convert_to_numpy(w), 4)  # −(0.6, 0.8) − 1.04·(0.6, 0.8)
        array([-1.224, -1.632], dtype=float32)
    """
    return AdaGC(clip_ratio, beta, warmup, max_norm, eps)
