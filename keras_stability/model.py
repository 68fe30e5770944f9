"""`StabilizedModel`: a Keras model whose `train_step` transforms gradients and reports telemetry."""

import warnings

import keras
import tensorflow as tf

from keras_stability.nonfinite import check_policy, nonfinite_errors
from keras_stability.optimizer import StabilizedOptimizer
from keras_stability.spikes import TELEMETRY as SPIKE_TELEMETRY
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

    Otherwise it is the model it wraps (with `transform=None, nonfinite="propagate"`, bit for bit):
    its `output_names`, dtype policy, `compute_loss` override and own metrics are used, `compile`
    takes Keras's arguments, and it is built when the model is. The telemetry is in the training
    logs and `fit`'s history but not in `train_on_batch`'s list (a float for a loss-only model, as
    in Keras); the inner model's own `train_step`, `test_step` and `predict_step` are not used.

    Args:
        model: the `keras.Model` to train.
        transform: a gradient transform, or `None` for telemetry alone.
        nonfinite: "raise", "skip", "zero" or "propagate" (Keras's behaviour).
        layer_norms: keep each variable's gradient norm for `GradientNormLogger`.
        step_log: capacity of the per-step log, or 0 for none.
        spikes: a `skip_spikes(...)` policy, judging each step's loss and gradient norm; its
            telemetry (`spike_skipped_steps`, `skip_streak`, `spike_loss_z`, ...) joins the logs.

    Example:
        >>> import keras, numpy as np, keras_stability as ks
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="ones")])
        >>> model = ks.StabilizedModel(inner, ks.clip_by_global_norm(1.0))
        >>> model.compile(keras.optimizers.SGD(0.1), "mse")
        >>> history = model.fit(np.ones((4, 3)), np.zeros((4, 1)), verbose=0).history
        >>> history["grad_norm"], history["clip_rate"]  # ‖(6, 6, 6, 6)‖ = 12 for the output 3, clipped
        ([12.0], [1.0])
    """

    def __init__(self, model, transform=None, nonfinite="skip", layer_norms=False, step_log=0, spikes=None, **kwargs):
        if not isinstance(model, keras.Model):
            raise TypeError(f"StabilizedModel wraps a keras.Model. Received: model={model!r}.")
        # The inner model's policy (`Model(dtype="mixed_float16")`) decides loss scaling, as in Keras.
        kwargs.setdefault("dtype", model.dtype_policy)
        super().__init__(**kwargs)
        check_transform(transform)
        check_policy(nonfinite)
        self.model = model
        if hasattr(model, "output_names"):
            # Keras's `compile` matches losses and metrics to outputs by these names.
            self.output_names = model.output_names
        self.transform = transform
        self.nonfinite = nonfinite
        self.layer_norms = layer_norms
        self.step_log_capacity = step_log
        self.spikes = spikes
        self.step_log = None
        self.telemetry = GradientTelemetry()
        if model.built:
            # Built weights can be loaded, and `BackupAndRestore` restored, before any `fit`.
            self.built = True

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def build(self, input_shape):
        if not self.model.built:
            self.model.build(input_shape)
        self.built = True

    def fit(self, *args, **kwargs):
        with nonfinite_errors():  # NonFiniteGradientError, not TensorFlow's "Graph execution error"
            return super().fit(*args, **kwargs)

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        loss_weights=None,
        metrics=None,
        weighted_metrics=None,
        run_eagerly=False,
        steps_per_execution=1,
        jit_compile="auto",
        auto_scale_loss=True,
    ):
        """Keras's `compile`, with `optimizer` wrapped in a `StabilizedOptimizer` (same arguments)."""
        optimizer = keras.optimizers.get(optimizer)
        if not isinstance(optimizer, StabilizedOptimizer):
            if (
                auto_scale_loss
                and self.dtype_policy.name == "mixed_float16"
                and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
            ):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name="loss_scale_optimizer")
            optimizer = StabilizedOptimizer(
                optimizer, self.transform, self.nonfinite, record_layer_norms=self.layer_norms, spikes=self.spikes
            )
        if self.step_log_capacity:
            with self.distribute_strategy.scope():
                self.step_log = StepLog(self.step_log_capacity)
        # The loss scaling, if any, already sits inside the StabilizedOptimizer.
        super().compile(
            optimizer=optimizer,
            loss=loss,
            loss_weights=loss_weights,
            metrics=metrics,
            weighted_metrics=weighted_metrics,
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            auto_scale_loss=False,
        )
        if overrides_compute_loss(self.model):
            # The inner model's `compute_loss` calls Keras's, which reads the compiled loss from it.
            self.model._compile_loss = self._compile_loss

    def compile_from_config(self, config):
        # Keras skips models with a custom `compile` when loading; ours accepts its own saved config
        # (the optimizer is already a StabilizedOptimizer, so it is not wrapped twice).
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        # Telemetry stays out of `metrics` so that `evaluate` does not report it. Keras leaves out the
        # metrics of a sub-model that is a Model; the inner model's own (those its `compute_loss`
        # updates) take the place where Keras lists a model's own metrics.
        metrics = []
        for metric in super().metrics:
            metrics.extend(self.model._metrics if metric is self.telemetry else [metric])
        return metrics

    def reset_metrics(self):
        super().reset_metrics()
        self.telemetry.reset_state()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The inner model's `compute_loss` where it overrides Keras's, else Keras's."""
        if overrides_compute_loss(self.model):
            return self.model._compute_loss(x, y, y_pred, sample_weight, training=training)
        return super().compute_loss(x, y, y_pred, sample_weight, training=training)

    def _flatten_metrics_in_order(self, logs):
        # `train_on_batch`'s list (or float) is Keras's: the telemetry is only in the dict and the logs.
        hidden = TELEMETRY + SPIKE_TELEMETRY
        return super()._flatten_metrics_in_order({k: v for k, v in logs.items() if k not in hidden})

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            # Keras's own train_step feeds its built-in "loss" metric the same way (the first input
            # given: an optional one may be None).
            batch = next(i for i in tf.nest.flatten(x) if i is not None)
            self._loss_tracker.update_state(
                unscale_for_distribution(loss),
                sample_weight=batch.shape[0] if batch.shape[0] is not None else tf.shape(batch)[0],
            )
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_weights
        if variables:
            gradients = tape.gradient(scaled_loss, variables)
            stats = self.optimizer.apply_with_stats(gradients, variables, loss=loss)
            self.telemetry.update_state(stats)
            if self.step_log is not None:
                self.step_log.write(global_batch_loss(loss), stats.grad_norm, stats.clipped_norm)
        else:
            warnings.warn("The model does not have any trainable weights.", stacklevel=2)
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        logs.update(self.telemetry.result())
        # A model without trainable weights can leave the optimizer unbuilt: then no step was non-finite.
        nonfinite_steps = self.optimizer.nonfinite_steps if self.optimizer.built else 0
        logs["nonfinite_steps"] = tf.cast(nonfinite_steps, tf.float32)
        if self.optimizer.built and self.optimizer.spikes is not None:
            logs.update(self.optimizer.spikes.telemetry())
        return logs

    def get_config(self):
        return {
            "model": keras.saving.serialize_keras_object(self.model),
            "transform": serialize(self.transform),
            "nonfinite": self.nonfinite,
            "layer_norms": self.layer_norms,
            "step_log": self.step_log_capacity,
            "spikes": None if self.spikes is None else keras.saving.serialize_keras_object(self.spikes),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
        spikes = config.pop("spikes", None)
        spikes = None if spikes is None else keras.saving.deserialize_keras_object(spikes)
        return cls(model, deserialize(config.pop("transform")), spikes=spikes, **config)


def overrides_compute_loss(model) -> bool:
    """Whether `model`'s class has its own `compute_loss` (Functional and Sequential keep Keras's)."""
    return type(model).compute_loss is not keras.Model.compute_loss


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


def stabilize(model, transform=None, nonfinite="skip", layer_norms=False, spikes=None):
    """Returns `StabilizedModel(model, transform, nonfinite, layer_norms, spikes=spikes)`; compile and fit it as usual.

    Example:
        >>> import keras, numpy as np, keras_stability as ks
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="ones")])
        >>> model = ks.stabilize(inner, ks.clip_by_global_norm(1.0))
        >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        >>> history = model.fit(np.ones((4, 3)), np.zeros((4, 1)), verbose=0)
        >>> sorted(history.history)
        ['clip_rate', 'clipped_norm', 'grad_norm', 'loss', 'nonfinite_steps']
    """
    return StabilizedModel(model, transform=transform, nonfinite=nonfinite, layer_norms=layer_norms, spikes=spikes)
