"""`StabilizedOptimizer`: any Keras optimizer, with gradient transforms applied where they belong.

Keras 3 clips (`clipnorm`, `clipvalue`, `global_clipnorm`) inside `apply`, on each replica's *local*
gradient, before the cross-replica sum; under `MirroredStrategy` that clips the wrong tensor. This
wrapper runs, per step:

    unscale (loss scaling) → all-reduce across replicas (once) → non-finite policy → spike policy
    → the inner optimizer's own `apply`, with the transform where Keras would clip (`inner_step`)

The policies and the transform run once, in cross-replica context, on the all-reduced gradient, so
every replica takes the same decision, and the inner update is applied once per variable. Under
gradient accumulation the transform sees the averaged gradient once per update; everything else
(step counts, learning-rate schedules, weight decay, EMA, `overwrite_with_gradient` variables) is
the inner optimizer's, in Keras's order.
"""

from typing import Any, NamedTuple

import keras
import tensorflow as tf

from keras_stability import inner_step
from keras_stability import nonfinite as nonfinite_policy
from keras_stability.optimizer_arguments import check_inner, check_no_base_arguments, is_loss_scaled
from keras_stability.spikes import SpikeSkipping
from keras_stability.transforms import norms
from keras_stability.transforms.base import (
    PACKAGE,
    GradientTransform,
    check_transform,
    deserialize,
    serialize,
)


class GradientStats(NamedTuple):
    """Telemetry of one `apply`, all scalars computed on the all-reduced gradient.

    `updated` is false on the micro-steps of gradient accumulation, where nothing was transformed.
    """

    grad_norm: tf.Tensor
    clipped_norm: tf.Tensor
    changed: tf.Tensor
    finite: tf.Tensor
    updated: tf.Tensor


@keras.saving.register_keras_serializable(package=PACKAGE)
class StabilizedOptimizer(keras.optimizers.Optimizer):
    """Wraps `inner_optimizer`, applying `transform` and a non-finite policy to every gradient.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` that updates the variables. It may be a
            `LossScaleOptimizer`; then non-finite steps are left to it (it skips them and lowers its
            loss scale), so only `nonfinite="skip"` is allowed, or `"propagate"` (Keras's: the same).
        transform: a `keras_stability` gradient transform (e.g. `clip_by_global_norm(1.0)`), or
            `None` for telemetry and the non-finite policy alone.
        nonfinite: one of "raise", "skip", "zero", "propagate" (see `keras_stability.nonfinite`).
        record_layer_norms: also keep each variable's gradient norm of the last update in the
            `layer_norms` variable (read by `GradientNormLogger`).
        spikes: a `skip_spikes(...)` policy that also skips steps whose loss or gradient norm
            spikes (see `keras_stability.spikes`), or `None`.

    The inner optimizer's `loss_scale_factor` moves onto the wrapper (a `LossScaleOptimizer` put
    around the wrapper then disables it, as it does for a plain optimizer).

    Example:
        >>> import keras, numpy as np, keras_stability as ks
        >>> w = keras.Variable([3.0, 4.0])
        >>> optimizer = ks.StabilizedOptimizer(keras.optimizers.SGD(0.1), ks.clip_by_global_norm(1.0))
        >>> optimizer.apply([keras.ops.convert_to_tensor([30.0, 40.0])], [w])
        >>> np.round(keras.ops.convert_to_numpy(w), 4)  # norm 50 clipped to 1: w − 0.1 · (0.6, 0.8)
        array([2.94, 3.92], dtype=float32)
    """

    def __init__(
        self,
        inner_optimizer: keras.optimizers.Optimizer,
        transform: GradientTransform | None = None,
        nonfinite: str = "skip",
        record_layer_norms: bool = False,
        name: str | None = None,
        spikes: SpikeSkipping | None = None,
        **kwargs: Any,
    ) -> None:
        check_no_base_arguments(kwargs)
        if spikes is not None and not isinstance(spikes, SpikeSkipping):
            raise TypeError(f"`spikes` must be a policy such as skip_spikes(), or None. Received: spikes={spikes!r}.")
        core = check_inner(inner_optimizer)
        check_transform(transform)
        nonfinite_policy.check_policy(nonfinite)
        if is_loss_scaled(inner_optimizer) and nonfinite not in ("skip", "propagate"):
            # "propagate" is Keras's behaviour, which with loss scaling is the skip below.
            raise ValueError(
                "With a LossScaleOptimizer inside, non-finite steps are how it lowers its loss scale, "
                f"so only nonfinite='skip' (or 'propagate', Keras's own) is possible. Received: nonfinite={nonfinite!r}."
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.transform = transform
        self.nonfinite = nonfinite
        self.record_layer_norms = record_layer_norms
        self.spikes = spikes
        # The gradient is unscaled before the transform, so the factor belongs here; a
        # LossScaleOptimizer around the wrapper sets it to None, as it does for any optimizer.
        self.loss_scale_factor = core.loss_scale_factor
        core.loss_scale_factor = None

    @property
    def core_optimizer(self) -> keras.optimizers.Optimizer:
        """The optimizer that owns `update_step`: the inner one, or the one inside its loss scaling."""
        inner = self.inner_optimizer
        return inner.inner_optimizer if is_loss_scaled(inner) else inner

    def build(self, var_list: list) -> None:
        self.nonfinite_steps = self.add_variable(
            shape=(), dtype="int64", initializer="zeros", aggregation="only_first_replica", name="nonfinite_steps"
        )
        if self.record_layer_norms:
            self.layer_norms = self.add_variable(
                shape=(len(var_list),), initializer="zeros", aggregation="only_first_replica", name="layer_norms"
            )
        self.inner_optimizer.build(var_list)
        if self.transform is not None:
            self.transform.build(var_list)
        if self.spikes is not None:
            self.spikes.build()
        super().build(var_list)

    @property
    def variables(self) -> list:
        transform_variables = self.transform.variables if self.transform is not None else []
        spike_variables = self.spikes.variables if self.spikes is not None else []
        return self._variables + self.inner_optimizer.variables + transform_variables + spike_variables

    def set_weights(self, weights: list) -> None:
        """Keras's `set_weights`, over every variable in `variables` (the inner optimizer's too)."""
        if not self.built:
            raise ValueError(
                "You are calling `set_weights()` on an optimizer that has not yet been built. "
                "Call `optimizer.build(trainable_variables)` first."
            )
        variables = self.variables
        if len(weights) != len(variables):
            raise ValueError(
                f"StabilizedOptimizer.set_weights needs one array per variable in `variables` "
                f"({len(variables)}). Received: {len(weights)} arrays."
            )
        for variable, weight in zip(variables, weights):
            if tuple(variable.shape) != tuple(weight.shape):
                raise ValueError(
                    f"Optimizer variable {variable.path} has shape {tuple(variable.shape)}, not compatible "
                    f"with the provided weight. Received: shape {tuple(weight.shape)}."
                )
            variable.assign(weight)

    @property
    def iterations(self) -> tf.Tensor:
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self) -> Any:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        self.inner_optimizer.learning_rate = learning_rate

    def exclude_from_weight_decay(self, var_list: list | None = None, var_names: list[str] | None = None) -> None:
        """Delegated to the optimizer that decays the weights (the wrapper itself has no weight decay)."""
        self.core_optimizer.exclude_from_weight_decay(var_list=var_list, var_names=var_names)

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        if is_loss_scaled(self.inner_optimizer):
            return self.inner_optimizer.scale_loss(loss)
        return super().scale_loss(loss)

    def finalize_variable_values(self, var_list: list) -> None:
        self.inner_optimizer.finalize_variable_values(var_list)

    def apply(self, grads: list, trainable_variables: list | None = None) -> None:
        if len(grads) == 0:  # a no-op, as in Keras's `Optimizer.apply`
            return
        self.apply_with_stats(grads, trainable_variables)

    def apply_with_stats(
        self, grads: list, trainable_variables: list | None = None, loss: tf.Tensor | None = None
    ) -> GradientStats:
        """Like `apply`, and returns the step's `GradientStats` (identical on every replica).

        `loss` (this replica's share, as Keras scales it) feeds the `spikes` policy, if any.
        """
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "StabilizedOptimizer was called with gradients but no variables before being built. "
                    "Call `optimizer.build(trainable_variables)` first or pass the variables."
                )
            trainable_variables = self._trainable_variables
        variables = list(trainable_variables)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(variables)
        grads = list(grads)
        replica_context = tf.distribute.get_replica_context()
        if replica_context is None or tf.distribute.get_strategy().num_replicas_in_sync == 1:
            return self._step(grads, variables, strategy=None, loss=loss)
        present = [i for i, g in enumerate(grads) if g is not None]
        # The spike policy's loss (the replicas' shares summed) travels in the gradients' all-reduce.
        shares = [] if loss is None or self.spikes is None else [tf.cast(loss, tf.float32)]
        reduced = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present] + shares)
        judged_loss = tuple(reduced[len(present) :])
        for i, g in zip(present, reduced):
            grads[i] = g

        def step_once(strategy, *per_replica):
            # After the all-reduce every replica holds the same gradient (and loss): use the first copy.
            local = [None if g is None else strategy.experimental_local_results(g)[0] for g in per_replica]
            step_loss = local.pop() if judged_loss else None
            return self._step(local, variables, strategy, loss=step_loss)

        return replica_context.merge_call(step_once, args=tuple(grads) + judged_loss)

    def _step(self, grads, variables, strategy, loss=None):
        core = self.core_optimizer
        grads, variables = core._filter_empty_gradients(grads, variables)
        regular = [not inner_step.overwrites(core, v) for v in variables]
        scale = self._loss_scale()
        if scale is not None:
            grads = [inner_step.unscale(g, scale) if r else g for g, r in zip(grads, regular)]
        grad_norm = norms.global_norm([g for g, r in zip(grads, regular) if r])
        # A NaN or an infinity anywhere makes the norm non-finite, and so does a norm beyond float32's
        # range, which no clipping can use either (tf.clip_by_global_norm turns it into NaN).
        finite = tf.math.is_finite(grad_norm)
        for g, r in zip(grads, regular):
            if not r:
                finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
        self.nonfinite_steps.assign_add(tf.cast(tf.logical_not(finite), tf.int64))
        one_step = not core.gradient_accumulation_steps
        idle = (tf.constant(0.0), tf.constant(0.0), tf.constant(False), tf.constant(False))

        def update(update_grads, update_variables):
            measured = grad_norm if one_step else None
            return self._transform_and_update(update_grads, update_variables, measured, strategy)

        def apply_step(step_grads):
            return inner_step.apply_gradients(core, step_grads, variables, update, idle)

        def in_branch(step_grads):
            # A tf.cond branch must hand the update its own graph's tensors: a gradient a transform
            # passes through untouched (AGC's excluded head) would be the outer graph's, which the
            # cross-replica sum refuses ("custom_gradient outputs should be from the same graph").
            return [tf.identity(g) for g in step_grads]

        policy = "skip" if is_loss_scaled(self.inner_optimizer) else self.nonfinite
        if policy == "raise":
            nonfinite_policy.raise_if_not_finite(finite)
        if policy == "zero":
            zeroed = nonfinite_policy.zero_if_not_finite([g for g, r in zip(grads, regular) if r], finite)
            grads = [zeroed.pop(0) if r else g for g, r in zip(grads, regular)]
        # A spike is skipped like a non-finite step under "skip": nothing changes, not even the step count.
        calm = None if self.spikes is None else self.spikes.judge(loss, grad_norm)
        loss_scaled = is_loss_scaled(self.inner_optimizer)
        proceed = finite if policy == "skip" and not loss_scaled else None
        if calm is not None:
            proceed = calm if proceed is None else tf.logical_and(proceed, calm)
        if loss_scaled:

            def finite_step():
                if calm is None:
                    return self._loss_scaled_step(apply_step, in_branch(grads))
                return tf.cond(calm, lambda: self._loss_scaled_step(apply_step, in_branch(grads)), lambda: idle)

            result = tf.cond(finite, finite_step, self._lower_loss_scale)
        elif proceed is None:
            result = apply_step(grads)
        else:
            result = tf.cond(proceed, lambda: apply_step(in_branch(grads)), lambda: idle)
        if self.spikes is not None:
            self.spikes.count_outcome(tf.logical_and(finite, calm) if loss_scaled else proceed)
        norm, clipped_norm, changed, updated = result
        return GradientStats(norm, clipped_norm, changed, finite, updated)

    def _loss_scale(self):
        if is_loss_scaled(self.inner_optimizer):
            return self.inner_optimizer.dynamic_scale
        return self.loss_scale_factor

    def _loss_scaled_step(self, apply_step, grads):
        """LossScaleOptimizer's finite step: the update, then its growth counter."""
        result = apply_step(grads)
        scaler = self.inner_optimizer

        def upscale():
            scaler.step_counter.assign(0)
            scaler.dynamic_scale.assign(scaler.dynamic_scale * 2.0)

        def increment():
            scaler.step_counter.assign_add(1)

        tf.cond(tf.equal(scaler.step_counter, scaler.dynamic_growth_steps - 1), upscale, increment)
        return result

    def _lower_loss_scale(self):
        """LossScaleOptimizer's non-finite step: no update, the loss scale halves."""
        scaler = self.inner_optimizer
        scaler.step_counter.assign(0)
        scaler.dynamic_scale.assign(scaler.dynamic_scale * 0.5)
        zero = tf.constant(0.0)
        return zero, zero, tf.constant(False), tf.constant(True)

    def _transform_and_update(self, grads, variables, grad_norm, strategy):
        if grad_norm is None:
            grad_norm = norms.global_norm(grads)
        if self.transform is not None:
            new_grads, changed, clipped_norm = self.transform.apply_measured(grads, variables, grad_norm)
        else:
            new_grads, changed, clipped_norm = grads, tf.constant(False), grad_norm
        if self.record_layer_norms:
            self._record_layer_norms(grads, variables)
        inner_step.update_variables(self.core_optimizer, new_grads, variables, strategy)
        return grad_norm, clipped_norm, tf.convert_to_tensor(changed), tf.constant(True)

    def _record_layer_norms(self, grads, variables):
        core = self.core_optimizer
        by_index = {core._get_variable_index(v): norms.tensor_norm(g) for g, v in zip(grads, variables)}
        self.layer_norms.assign(tf.stack([by_index.get(i, tf.constant(0.0)) for i in range(self.layer_norms.shape[0])]))

    def get_config(self) -> dict[str, Any]:
        inner = keras.saving.serialize_keras_object(self.inner_optimizer)
        if self.loss_scale_factor is not None:
            inner["config"]["loss_scale_factor"] = self.loss_scale_factor
        return {
            "name": self.name,
            "inner_optimizer": inner,
            "transform": serialize(self.transform),
            "nonfinite": self.nonfinite,
            "record_layer_norms": self.record_layer_norms,
            "spikes": None if self.spikes is None else keras.saving.serialize_keras_object(self.spikes),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict | None = None) -> "StabilizedOptimizer":
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        spikes = config.pop("spikes", None)
        spikes = None if spikes is None else keras.saving.deserialize_keras_object(spikes)
        return cls(inner, deserialize(config.pop("transform")), spikes=spikes, **config)
