"""Z-score clipping (ZClip) of the global norm against EMA statistics, with the reference's options."""

import keras
import tensorflow as tf

from keras_stability.transforms.base import PACKAGE, GlobalNormTransform, state_variable
from keras_stability.transforms.clipping import positive_float, scale_by_global_norm

MODES = ("zscore", "percentile")
CLIP_OPTIONS = ("adaptive_scaling", "mean")


@keras.saving.register_keras_serializable(package=PACKAGE)
class ZClip(GlobalNormTransform):
    def __init__(
        self,
        alpha: float = 0.97,
        z_threshold: float = 2.5,
        warmup: int = 25,
        eps: float = 1e-6,
        max_grad_norm: float | None = 1.0,
        mode: str = "zscore",
        clip_option: str = "adaptive_scaling",
    ) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise ValueError(f"`alpha` of zclip must be in (0, 1). Received: alpha={alpha!r}.")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"`warmup` of zclip must be an integer ≥ 1. Received: warmup={warmup!r}.")
        if mode not in MODES:
            raise ValueError(f"`mode` of zclip must be one of {', '.join(map(repr, MODES))}. Received: mode={mode!r}.")
        if clip_option not in CLIP_OPTIONS:
            raise ValueError(
                f"`clip_option` of zclip must be one of {', '.join(map(repr, CLIP_OPTIONS))}. "
                f"Received: clip_option={clip_option!r}."
            )
        self.alpha = float(alpha)
        self.z_threshold = positive_float("zclip", "z_threshold", z_threshold)
        self.warmup = warmup
        self.eps = positive_float("zclip", "eps", eps)
        self.max_grad_norm = None if max_grad_norm is None else positive_float("zclip", "max_grad_norm", max_grad_norm)
        self.mode = mode
        self.clip_option = clip_option

    def build(self, variables: list) -> None:
        self.warmup_norms = state_variable("zclip_warmup_norms", (self.warmup,))
        self.observed = state_variable("zclip_observed", (), "int32")
        self.mean = state_variable("zclip_mean")
        self.variance = state_variable("zclip_variance")
        self.built = True

    @property
    def variables(self) -> list:
        if not self.built:
            return []
        return [self.warmup_norms, self.observed, self.mean, self.variance]

    def spike_threshold(self, norm: tf.Tensor, updating: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Whether `norm` is a spike, and the norm the reference clips a spike to."""
        std = tf.sqrt(self.variance)
        if self.mode == "percentile":
            limit = self.mean + self.z_threshold * std
            return tf.logical_and(updating, norm > limit), limit
        z = (norm - self.mean) / (std + self.eps)
        spike = tf.logical_and(updating, z > self.z_threshold)
        if self.clip_option == "mean":
            return spike, self.mean
        # Reciprocal clipping: the further the outlier, the tighter the threshold (ZClip eq. 5).
        return spike, self.mean + self.z_threshold**2 * std / tf.maximum(z, self.eps)

    def transform_measured(self, gradients: list, variables: list, norm: tf.Tensor) -> tuple:
        finite = tf.math.is_finite(norm)
        in_warmup = self.observed < self.warmup
        warming = tf.logical_and(finite, in_warmup)
        updating = tf.logical_and(finite, tf.logical_not(in_warmup))

        warmup_norms = tf.where(
            tf.logical_and(warming, tf.range(self.warmup) == self.observed), norm, self.warmup_norms
        )
        warmup_mean = tf.reduce_mean(warmup_norms)
        warmup_variance = tf.reduce_mean(tf.square(warmup_norms - warmup_mean))
        warmup_done = tf.logical_and(warming, self.observed + 1 == self.warmup)

        spike, spike_norm = self.spike_threshold(norm, updating)
        threshold = tf.where(spike, spike_norm, float("inf"))
        # The EMA follows the spike threshold, not the cap (as in the reference).
        effective = tf.where(spike, threshold, norm)
        ema_mean = self.alpha * self.mean + (1 - self.alpha) * effective
        ema_variance = self.alpha * self.variance + (1 - self.alpha) * tf.square(effective - ema_mean)

        # Non-finite norms change nothing: they would poison the EMA for good.
        self.warmup_norms.assign(warmup_norms)
        self.mean.assign(tf.where(warmup_done, warmup_mean, tf.where(updating, ema_mean, self.mean)))
        self.variance.assign(tf.where(warmup_done, warmup_variance, tf.where(updating, ema_variance, self.variance)))
        self.observed.assign(self.observed + tf.cast(warming, tf.int32))
        if self.max_grad_norm is not None:
            threshold = tf.minimum(threshold, self.max_grad_norm)
        return scale_by_global_norm(gradients, norm, threshold)

    def get_config(self) -> dict:
        return {
            "alpha": self.alpha,
            "z_threshold": self.z_threshold,
            "warmup": self.warmup,
            "eps": self.eps,
            "max_grad_norm": self.max_grad_norm,
            "mode": self.mode,
            "clip_option": self.clip_option,
        }


def zclip(
    alpha: float = 0.97,
    z_threshold: float = 2.5,
    warmup: int = 25,
    eps: float = 1e-6,
    max_grad_norm: float | None = 1.0,
    mode: str = "zscore",
    clip_option: str = "adaptive_scaling",
) -> ZClip:
    """ZClip: z-score spike clipping of the global norm, with the reference's parameters and defaults.

    The first `warmup` finite norms set μ and σ² (no spike clipping). Then each step, with
    z = (‖G‖ − μ) / (σ + eps), a spike is z > z_threshold (`mode="zscore"`) or ‖G‖ > μ + z_threshold·σ
    (`mode="percentile"`). A z-score spike is clipped to μ + z_threshold²·σ / z
    (`clip_option="adaptive_scaling"`) or to μ (`"mean"`); a percentile spike to μ + z_threshold·σ.
    The effective norm n' (the spike threshold, or ‖G‖) updates μ ← αμ + (1−α)n',
    σ² ← ασ² + (1−α)(n' − μ)². Every step, warm-up included, the applied norm is also capped at
    `max_grad_norm` (`None`: no cap). Non-finite norms leave μ, σ² and the warm-up untouched.

    Args:
        alpha, z_threshold, warmup, eps, max_grad_norm, mode, clip_option: the reference's `alpha`,
            `z_thresh`, `warmup_steps`, `eps`, `max_grad_norm`, `mode` and `clip_option`.

    Differences from the reference (bluorion-com/ZClip): gradients are scaled by threshold / ‖G‖
    (the reference adds 1e-6 to ‖G‖); its `clip_factor` and `skip_update_on_spike` are not offered
    (skipping is the wrapper's `nonfinite` policy's business); the warm-up ignores non-finite norms.

    Reference: Kumar, Owen, Chowdhury & Güra, "ZClip: Adaptive Spike Mitigation for LLM Pre-Training",
    arXiv:2504.02507, 2025.
    """
    return ZClip(alpha, z_threshold, warmup, eps, max_grad_norm, mode, clip_option)
