"""`StabilizedModel`: a Keras model whose `train_step` transforms gradients and reports telemetry."""

import keras
import tensorflow as tf

from keras_stability.nonfinite import check_policy, nonfinite_errors
from keras_stability.optimizer import StabilizedOptimizer
from keras_stability.step_log import StepLog
from keras_stability.transforms.base import PACKAGE, check_transform, deserialize, serialize

TELEMETRY = ("grad_norm", "clipped_norm", "clip_rate", "nonfinite_steps")


@keras.saving.register_keras_serializable(package=PACKAGE)
class GradientTelemetry(keras.metrics.Metric):
    """Epoch means of `grad_norm`, `clipped_norm` and `clip_rate` over the counted steps.

    One vector variable, so a step costs one variable update instead of one per statistic.
    """

    NAMES = TELEMETRY[:3]

    def __init__(self, name="gradient_telemetry", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        # Σ grad_norm, Σ clipped_norm, Σ changed, number of steps: over steps that updated with a
        # finite gradient (a NaN step is counted by `nonfinite_steps`, not averaged in).
        self.sums = self.add_variable(shape=(4,), initializer="zeros", aggregation="sum", name="sums")

    def update_state(self, stats):
        counted = tf.logical_and(stats.updated, stats.finite)
        step = tf.stack([stats.grad_norm, stats.clipped_norm, tf.cast(stats.changed, tf.float32), 1.0])
        self.sums.assign_add(tf.where(counted, step, 0.0))

    def result(self):
        means = tf.math.divide_no_nan(self.sums[:3], self.sums[3])
        return dict(zip(self.NAMES, tf.unstack(means)))

    def reset_state(self):
        self.sums.assign(tf.zeros((4,)))


@keras.saving.register_keras_serializable(package=PACKAGE)
class StabilizedModel(keras.Model):
    """Wraps any Keras model (Sequential, functional, subclassed) for stabilised training.

    `compile` wraps the optimizer in `StabilizedOptimizer(optimizer, transform, nonfinite)` (under the
    `mixed_float16` policy with a `LossScaleOptimizer` inside, so the transform sees unscaled
    gradients). `train_step` follows Keras's own order — forward under GradientTape, `compute_loss`,
    `optimizer.scale_loss`, gradient, apply, metrics — and adds four metrics, computed on the
    all-reduced gradient so they are exact under `MirroredStrategy`:

    - `grad_norm`: mean over the epoch's steps of the global norm before the transform;
    - `clipped_norm`: the same after the transform;
    - `clip_rate`: fraction of the epoch's steps where the transform changed the gradient;
    - `nonfinite_steps`: non-finite steps since training began (the optimizer's counter).

    With `step_log=N` (N ≥ steps per epoch) every step's loss, `grad_norm` and `clipped_norm` are kept
    on the device in `model.step_log` (a `StepLog`) until read with `model.step_log.drain()`.

    With `layer_norms=True` every variable's gradient norm of the last update is kept in
    `model.optimizer.layer_norms` for `GradientNormLogger`; it is off by default because reading it
    each step costs a host sync.
    """

    def __init__(self, model, transform=None, nonfinite="skip", layer_norms=False, step_log=0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(f"StabilizedModel wraps a keras.Model. Received: model={model!r}.")
        check_transform(transform)
        check_policy(nonfinite)
        self.model = model
        self.transform = transform
        self.nonfinite = nonfinite
        self.layer_norms = layer_norms
        self.step_log_capacity = step_log
        self.step_log = None
        self.telemetry = GradientTelemetry()

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def build(self, input_shape):
        if not self.model.built:
            self.model.build(input_shape)
        self.built = True

    def fit(self, *args, **kwargs):
        with nonfinite_errors():  # NonFiniteGradientError, not TensorFlow's "Graph execution error"
            return super().fit(*args, **kwargs)

    def compile(self, optimizer="rmsprop", auto_scale_loss=True, **kwargs):
        optimizer = keras.optimizers.get(optimizer)
        if not isinstance(optimizer, StabilizedOptimizer):
            if (
                auto_scale_loss
                and self.dtype_policy.name == "mixed_float16"
                and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
            ):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer = StabilizedOptimizer(
                optimizer, self.transform, self.nonfinite, record_layer_norms=self.layer_norms
            )
        if self.step_log_capacity:
            with self.distribute_strategy.scope():
                self.step_log = StepLog(self.step_log_capacity)
        # The loss scaling, if any, already sits inside the StabilizedOptimizer.
        super().compile(optimizer=optimizer, auto_scale_loss=False, **kwargs)

    def compile_from_config(self, config):
        # Keras skips models with a custom `compile` when loading; ours accepts its own saved config
        # (the optimizer is already a StabilizedOptimizer, so it is not wrapped twice).
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        # Telemetry stays out of `metrics` so that `evaluate` does not report it.
        return [m for m in super().metrics if m is not self.telemetry]

    def reset_metrics(self):
        super().reset_metrics()
        self.telemetry.reset_state()

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            # Keras's own train_step feeds its built-in "loss" metric the same way.
            batch = tf.nest.flatten(x)[0]
            self._loss_tracker.update_state(
                unscale_for_distribution(loss),
                sample_weight=batch.shape[0] if batch.shape[0] is not None else tf.shape(batch)[0],
            )
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_weights
        gradients = tape.gradient(scaled_loss, variables)
        stats = self.optimizer.apply_with_stats(gradients, variables)
        self.telemetry.update_state(stats)
        if self.step_log is not None:
            self.step_log.write(global_batch_loss(loss), stats.grad_norm, stats.clipped_norm)
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        logs.update(self.telemetry.result())
        logs["nonfinite_steps"] = tf.cast(self.optimizer.nonfinite_steps, tf.float32)
        return logs

    def get_config(self):
        return {
            "model": keras.saving.serialize_keras_object(self.model),
            "transform": serialize(self.transform),
            "nonfinite": self.nonfinite,
            "layer_norms": self.layer_norms,
            "step_log": self.step_log_capacity,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
        return cls(model, deserialize(config.pop("transform")), **config)


def global_batch_loss(replica_loss):
    """The whole batch's loss from one replica's share (Keras divided each share by the replica count)."""
    context = tf.distribute.get_replica_context()
    if context is None or tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return replica_loss
    return context.all_reduce(tf.distribute.ReduceOp.SUM, replica_loss)


def unscale_for_distribution(loss):
    """Keras divides the loss by the replica count for the gradient; the tracked loss undoes that."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss


def stabilize(model, transform=None, nonfinite="skip", layer_norms=False):
    """Returns `StabilizedModel(model, transform, nonfinite, layer_norms)`; compile and fit it as usual.

    Example:
        >>> model = stabilize(keras.Sequential([...]), clip_by_global_norm(1.0))
        >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        >>> history = model.fit(x, y, epochs=2)
        >>> history.history["clip_rate"]
    """
    return StabilizedModel(model, transform=transform, nonfinite=nonfinite, layer_norms=layer_norms)
