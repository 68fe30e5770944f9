"""What `StabilizedOptimizer` refuses: Keras's per-replica clipping arguments, and the inner optimizer's own.

Keras's `clipnorm`, `clipvalue` and `global_clipnorm` clip each replica's local gradient before the
all-reduce; the wrapper takes the matching transform instead. Settings of the update itself
(`learning_rate`, `weight_decay`, EMA, loss scaling, accumulation) belong to the inner optimizer.
"""

from typing import Any

import keras

CLIP_ARGUMENTS = {
    "clipnorm": "clip_by_norm",
    "clipvalue": "clip_by_value",
    "global_clipnorm": "clip_by_global_norm",
}
INNER_ARGUMENTS = (
    "learning_rate",
    "weight_decay",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)


def check_no_base_arguments(kwargs: dict[str, Any]) -> None:
    for name, transform in CLIP_ARGUMENTS.items():
        if kwargs.get(name) is not None:
            raise ValueError(
                f"StabilizedOptimizer does not take `{name}`: pass transform={transform}(...) "
                f"instead, which clips after the cross-replica all-reduce. Received: {name}={kwargs[name]!r}."
            )
    for name in INNER_ARGUMENTS:
        if kwargs.get(name) not in (None, False):
            raise ValueError(
                f"StabilizedOptimizer does not take `{name}`; set it on the inner optimizer. "
                f"Received: {name}={kwargs[name]!r}."
            )
    unknown = sorted(k for k in kwargs if k not in CLIP_ARGUMENTS and k not in INNER_ARGUMENTS)
    if unknown:
        raise ValueError(f"StabilizedOptimizer got unexpected arguments. Received: {', '.join(unknown)}.")


def check_inner(inner_optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer that owns `update_step` (inside a `LossScaleOptimizer`, its inner one)."""
    if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "`inner_optimizer` must be a keras.optimizers.Optimizer instance such as "
            f"keras.optimizers.SGD(0.01). Received: inner_optimizer={inner_optimizer!r}."
        )
    core = inner_optimizer.inner_optimizer if is_loss_scaled(inner_optimizer) else inner_optimizer
    for name, transform in CLIP_ARGUMENTS.items():
        if getattr(core, name, None):
            raise ValueError(
                f"The inner optimizer has `{name}` set; Keras applies it per replica before the "
                f"all-reduce. Use transform={transform}(...) instead. Received: {name}={getattr(core, name)!r}."
            )
    return core


def is_loss_scaled(optimizer: keras.optimizers.Optimizer) -> bool:
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
