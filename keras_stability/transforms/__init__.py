"""Composable gradient transforms: `(gradients, variables) -> (gradients, changed)`."""

from keras_stability.transforms.agc import AdaptiveClip, adaptive_clip
from keras_stability.transforms.base import Chain, GlobalNormTransform, GradientTransform, chain, deserialize, serialize
from keras_stability.transforms.clipping import (
    ClipByGlobalNorm,
    ClipByNorm,
    ClipByValue,
    NormalizeGradient,
    clip_by_global_norm,
    clip_by_norm,
    clip_by_value,
    normalize_gradient,
)
from keras_stability.transforms.l1_norm import ClipByL1Norm, clip_by_l1_norm
from keras_stability.transforms.norms import global_norm, tensor_norm
from keras_stability.transforms.percentile import AutoClip, autoclip
from keras_stability.transforms.proximal import RegularizeGradient, regularize_gradient
from keras_stability.transforms.quantized_ema import QuantizedEmaClip, quantized_ema_clip
from keras_stability.transforms.relative_clip import AdaGC, adagc
from keras_stability.transforms.zscore import ZClip, zclip

FACTORIES = {
    "clip_by_value": clip_by_value,
    "clip_by_norm": clip_by_norm,
    "clip_by_global_norm": clip_by_global_norm,
    "normalize_gradient": normalize_gradient,
    "adaptive_clip": adaptive_clip,
    "autoclip": autoclip,
    "zclip": zclip,
    "clip_by_l1_norm": clip_by_l1_norm,
    "regularize_gradient": regularize_gradient,
    "quantized_ema_clip": quantized_ema_clip,
    "adagc": adagc,
}

__all__ = [
    "FACTORIES",
    "AdaGC",
    "AdaptiveClip",
    "AutoClip",
    "Chain",
    "ClipByGlobalNorm",
    "ClipByL1Norm",
    "ClipByNorm",
    "ClipByValue",
    "GlobalNormTransform",
    "GradientTransform",
    "NormalizeGradient",
    "QuantizedEmaClip",
    "RegularizeGradient",
    "ZClip",
    "adagc",
    "adaptive_clip",
    "autoclip",
    "chain",
    "clip_by_global_norm",
    "clip_by_l1_norm",
    "clip_by_norm",
    "clip_by_value",
    "deserialize",
    "global_norm",
    "normalize_gradient",
    "quantized_ema_clip",
    "regularize_gradient",
    "serialize",
    "tensor_norm",
    "zclip",
]
