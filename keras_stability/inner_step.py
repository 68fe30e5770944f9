"""The wrapped Keras optimizer's `apply`, in Keras's own order, with the transform in place of its clipping.

`StabilizedOptimizer` does not call the inner optimizer's `apply`: that would count accumulation
micro-steps wrongly, put `overwrite_with_gradient` variables through the transform, and all-reduce
the gradient a second time. It runs the same steps as Keras 3.15's `BaseOptimizer.apply` and
`_backend_apply_gradients` instead, on the inner optimizer's own state:

    drop None gradients → `overwrite_with_gradient` variables take their gradient (the max over an
    accumulation window) → accumulate, or on an update step: average → transform (where Keras clips)
    → weight decay → `update_step` → reset the accumulators → EMA (every micro-step) → constraints
    → iterations + 1

The functions here take the core optimizer (the one that owns `update_step`) and run without a
strategy or in cross-replica context, where `strategy` is the `tf.distribute` strategy: then every
variable is updated once, on the all-reduced gradient.
"""

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf
from keras.src.backend.tensorflow.optimizer import TFOptimizer

from keras_stability.transforms import norms

Gradient = tf.Tensor | tf.IndexedSlices
UpdateFn = Callable[[list, list], tuple]


def overwrites(core: keras.optimizers.Optimizer, variable) -> bool:
    """Whether Keras assigns this variable its gradient instead of updating it (float8 scales, amax)."""
    return core._overwrite_variable_with_gradient(variable)


def unscale(gradient: Gradient, scale) -> Gradient:
    """`gradient / scale`, Keras's unscaling (a division, so the result matches Keras bit for bit)."""
    values = norms.values_of(gradient)
    return norms.with_values(gradient, values / tf.cast(scale, values.dtype))


def apply_gradients(
    core: keras.optimizers.Optimizer, grads: list, variables: list, update: UpdateFn, idle: tuple
) -> tuple:
    """One `apply` of `core`: `update(grads, variables)` transforms and applies, on update steps only.

    `grads` have had `None` dropped and are unscaled. Returns what `update` returned, or `idle` on
    accumulation micro-steps.
    """
    grads, variables = core._overwrite_variables_directly_with_gradients(grads, variables)
    result = idle
    if grads:
        result = accumulate_or_update(core, grads, variables, update, idle)
        update_moving_average(core)
        for variable in variables:
            if variable.constraint is not None:
                variable.assign(variable.constraint(variable))
    core._iterations.assign_add(1)
    return result


def accumulate_or_update(core, grads: list, variables: list, update: UpdateFn, idle: tuple) -> tuple:
    steps = core.gradient_accumulation_steps
    if not steps:
        return update(grads, variables)
    accumulators = [core._accumulated_gradients[core._get_variable_index(v)] for v in variables]

    def update_step():
        averaged = [(tf.convert_to_tensor(g) + acc) / steps for g, acc in zip(grads, accumulators)]
        result = update(averaged, variables)
        core._backend_reset_gradient_accumulators()
        return result

    def accumulate():
        for g, acc in zip(grads, accumulators):
            acc.assign(tf.convert_to_tensor(g) + acc)
        return idle

    return tf.cond((core._iterations + 1) % steps == 0, update_step, accumulate)


def update_moving_average(core) -> None:
    """Keras's EMA: the average moves on every micro-step, the overwrite counts updates."""
    if not core.use_ema:
        return
    core._update_model_variables_moving_average(core._trainable_variables)
    if core.ema_overwrite_frequency:
        tf.cond(
            (core.iterations + 1) % core.ema_overwrite_frequency == 0,
            lambda: core._overwrite_model_variables_with_average_value(core._trainable_variables),
            lambda: None,
        )


def update_variables(core, grads: Sequence[Gradient], variables: list, strategy) -> None:
    """Weight decay, then `update_step` on each variable: once, with the gradient as given."""
    if strategy is None:
        core._apply_weight_decay(variables)
        core._backend_update_step(list(grads), variables, core.learning_rate)
        return
    if reduces_on_its_own(core):
        # An optimizer with its own per-step work (Keras's Nadam) only runs it in a replica
        # context, where it all-reduces again: give each replica an equal share of the gradient.
        replicas = strategy.num_replicas_in_sync
        shares = tuple(
            strategy.extended.broadcast_to(norms.scale(g, 1.0 / replicas), v.value) for g, v in zip(grads, variables)
        )

        def replica_update(*share):
            core._apply_weight_decay(variables)
            core._backend_update_step(list(share), variables, core.learning_rate)

        strategy.extended.call_for_each_replica(replica_update, args=shares)
        return
    values = [v.value for v in variables]
    if core.weight_decay is not None:
        # TFOptimizer._apply_weight_decay's update, without its merge_call (we are past it).
        def decay(variable):
            if core._use_weight_decay(variable):
                lr = tf.cast(core.learning_rate, variable.dtype)
                wd = tf.cast(core.weight_decay, variable.dtype)
                variable.assign_sub(variable * wd * lr)

        for value in values:
            strategy.extended.update(value, decay, group=False)
    core._distributed_tf_update_step(strategy, list(zip(grads, values)), core.learning_rate)


def reduces_on_its_own(core) -> bool:
    """Whether `core` overrides the TensorFlow optimizer's update or weight decay (Nadam, Muon)."""
    kind = type(core)
    return (
        kind._backend_update_step is not TFOptimizer._backend_update_step
        or kind._apply_weight_decay is not TFOptimizer._apply_weight_decay
    )
