"""The `stabilizer` section: its gradient transforms, a tagged union keyed on `name`, and the
non-finite policy.

Each spec repeats its factory's arguments and defaults (`keras_stability.transforms.FACTORIES`) so
that an experiment file is checked before anything is built; tests/config/test_transform_specs.py
ties the two, argument by argument.
"""

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, model_validator

from keras_stability.config.strict import PositiveCount, Strict, count


class ClipByValueSpec(Strict):
    name: Literal["clip_by_value"]
    limit: PositiveFloat


class ClipByNormSpec(Strict):
    name: Literal["clip_by_norm"]
    max_norm: PositiveFloat


class ClipByGlobalNormSpec(Strict):
    name: Literal["clip_by_global_norm"]
    max_norm: PositiveFloat


class NormalizeGradientSpec(Strict):
    name: Literal["normalize_gradient"]
    scale: PositiveFloat


class AdaptiveClipSpec(Strict):
    name: Literal["adaptive_clip"]
    clip_factor: PositiveFloat = 0.01
    eps: PositiveFloat = 1e-3
    exclude: list[str] = []


class AutoClipSpec(Strict):
    name: Literal["autoclip"]
    percentile: Annotated[float, Field(ge=0, le=100)] = 10.0
    history: PositiveCount = 1000


class ZClipSpec(Strict):
    """`zclip`'s arguments and defaults, the reference's (`max_grad_norm: null` for no cap)."""

    name: Literal["zclip"]
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.97
    z_threshold: PositiveFloat = 2.5
    warmup: PositiveCount = 25
    max_grad_norm: PositiveFloat | None = 1.0
    mode: Literal["zscore", "percentile"] = "zscore"
    clip_option: Literal["adaptive_scaling", "mean"] = "adaptive_scaling"


class ClipByL1NormSpec(Strict):
    name: Literal["clip_by_l1_norm"]
    max_norm: PositiveFloat


class RegularizeGradientSpec(Strict):
    """The gradient's L1/L2 proximal point (`regularize_gradient`); at least one penalty > 0."""

    name: Literal["regularize_gradient"]
    l1: Annotated[float, Field(ge=0)] = 0.0
    l2: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def has_a_penalty(self):
        if not (self.l1 or self.l2):
            raise ValueError("regularize_gradient needs `l1` or `l2` > 0. Received: l1=0, l2=0")
        return self


class QuantizedEmaClipSpec(Strict):
    name: Literal["quantized_ema_clip"]
    limit: PositiveFloat
    levels: PositiveCount = 127
    decay: Annotated[float, Field(ge=0, lt=1)] = 0.9


class AdaGCSpec(Strict):
    """`adagc`'s arguments and defaults, the reference's (lishuai-97/AdaGC)."""

    name: Literal["adagc"]
    clip_ratio: PositiveFloat = 1.04
    beta: Annotated[float, Field(ge=0, lt=1)] = 0.99
    warmup: count(0) = 100
    max_norm: PositiveFloat = 1.0
    eps: PositiveFloat = 1e-6


TransformSpec = Annotated[
    ClipByValueSpec
    | ClipByNormSpec
    | ClipByGlobalNormSpec
    | NormalizeGradientSpec
    | AdaptiveClipSpec
    | AutoClipSpec
    | ZClipSpec
    | ClipByL1NormSpec
    | RegularizeGradientSpec
    | QuantizedEmaClipSpec
    | AdaGCSpec,
    Field(discriminator="name"),
]
TRANSFORM_SPECS = {spec.model_fields["name"].annotation.__args__[0]: spec for spec in TransformSpec.__origin__.__args__}


class StabilizerConfig(Strict):
    transforms: list[TransformSpec] = []
    # Keras's own behaviour by default, as for a run without a stabilizer: within one comparison every
    # arm meets non-finite gradients the same way unless the comparison is about the policy.
    nonfinite: Literal["raise", "skip", "zero", "propagate"] = "propagate"
