"""Turning a resolved `RunConfig` into a compiled `StabilizedModel`."""

import functools

import keras
import tensorflow as tf
from keras.src.utils import rng_utils  # get_random_seed is not exported; it reads what set_random_seed stored

from keras_stability.experiments.zoo import build_model
from keras_stability.model import StabilizedModel
from keras_stability.transforms import FACTORIES, chain

OPTIMIZERS = {
    "sgd": lambda config, rate: keras.optimizers.SGD(rate, momentum=config.momentum, nesterov=config.nesterov),
    "adam": lambda config, rate: keras.optimizers.Adam(rate),
    "adagrad": lambda config, rate: keras.optimizers.Adagrad(rate),
    "rmsprop": lambda config, rate: keras.optimizers.RMSprop(rate),
}
# The adding problem's usual success criterion: an absolute error below 0.04.
ADDING_TOLERANCE = 0.04


def ensure_logical_cpus(count):
    """Splits the CPU into `count` logical devices (for data-parallel runs on CPU-only machines)."""
    if len(tf.config.list_logical_devices("CPU")) >= count:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise RuntimeError(
            f"training.logical_cpus={count} must take effect before TensorFlow starts; run this experiment "
            "in a fresh `keras-stability run` process"
        ) from None


@functools.cache
def cached_strategy(devices):
    # One strategy object per device set and process: separate MirroredStrategy objects reuse
    # collective-op keys and clash.
    return tf.distribute.MirroredStrategy(list(devices))


def distribution_strategy(training):
    """The `tf.distribute` strategy for `training.distribute`; the default strategy for "none".

    "mirrored" uses every GPU, or else every logical CPU (see `logical_cpus`); the schema refuses
    multi-worker training (`TrainingConfig`).
    """
    if training.distribute == "none":
        return tf.distribute.get_strategy()
    if training.logical_cpus:
        ensure_logical_cpus(training.logical_cpus)
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return cached_strategy(tuple(device.name for device in devices))


def epoch_dataset(x, y, order, batch_size):
    """One epoch of (x[order], y[order]) batches as a tf.data pipeline over tensors kept on the device.

    Gathering by index avoids converting and copying the arrays into a new pipeline every epoch; the
    order comes from the caller, so it is reproducible and restorable per (seed, epoch).
    """
    indices = tf.data.Dataset.from_tensor_slices(tf.constant(order, tf.int32)).batch(batch_size)
    return indices.map(lambda batch: (tf.gather(x, batch), tf.gather(y, batch))).prefetch(tf.data.AUTOTUNE)


def nonfinite_policy(stabilizer):
    """Without a stabilizer, gradients are applied as they are, as plain Keras does."""
    return stabilizer.nonfinite if stabilizer is not None else "propagate"


def build_transform(stabilizer):
    if stabilizer is None or not stabilizer.transforms:
        return None
    transforms = [
        FACTORIES[spec.name](**{k: v for k, v in spec.model_dump().items() if k != "name"})
        for spec in stabilizer.transforms
    ]
    return transforms[0] if len(transforms) == 1 else chain(*transforms)


def build_optimizer(config, total_steps):
    rate = config.learning_rate
    if config.schedule.name == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            rate, decay_steps=max(1, total_steps), alpha=config.schedule.alpha
        )
    if config.schedule.warmup_steps:
        rate = LinearWarmup(rate, config.schedule.warmup_steps)
    return OPTIMIZERS[config.name](config, rate)


@keras.saving.register_keras_serializable(package="keras_stability")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """A constant learning rate reached linearly: `rate` · min(1, (step + 1) / `warmup_steps`).

    Args:
        rate: the rate after the warm-up.
        warmup_steps: steps to reach it; the first step trains at `rate / warmup_steps`.

    References:
        Goyal et al. 2017, "Accurate, Large Minibatch SGD"; Gilmer et al. 2022, "A Loss Curvature
        Perspective on Training Instability in Deep Learning".

    >>> round(float(LinearWarmup(0.1, 4)(1)), 6)  # the second step's rate: 2/4 of 0.1
    0.05
    """

    def __init__(self, rate: float, warmup_steps: int):
        self.rate, self.warmup_steps = float(rate), int(warmup_steps)

    def __call__(self, step):
        progress = (keras.ops.cast(step, "float32") + 1.0) / float(self.warmup_steps)
        return self.rate * keras.ops.minimum(1.0, progress)

    def get_config(self):
        return {"rate": self.rate, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="keras_stability")
def within_tolerance(y_true, y_pred):
    return keras.ops.cast(keras.ops.abs(y_true - y_pred) < ADDING_TOLERANCE, "float32")


def steps_per_execution(training, steps_per_epoch):
    """Keras's `steps_per_execution` for `fit`. "auto" trains one device through `train_epoch` (the
    epoch in one graph execution, no `tf.data`); the compiled value is then the epoch, which `fit`
    would use too. Under `distribute` it is one step: TensorFlow cannot run the cross-replica merge
    inside Keras's multi-step loop ("You must feed a value for placeholder tensor")."""
    if training.steps_per_execution != "auto":
        return training.steps_per_execution
    return steps_per_epoch if training.distribute == "none" else 1


def compiled_model(config, steps_per_epoch, task, seed=None):
    """A compiled `StabilizedModel` whose `step_log` holds one epoch of per-step telemetry.

    `task` is the dataset's `Task` (`Splits.task`); its kind alone ("classification" or "regression")
    is enough for the zoo's models. A model factory also receives `seed`: by default the one last
    given to `keras.utils.set_random_seed` (the runner's run seed), which has already fixed the
    weights' initialisation.
    Classification uses sparse cross-entropy on logits; regression (the adding problem) uses MSE, and
    its `accuracy` is the fraction of predictions within 0.04 of the target.
    """
    stabilizer = config.stabilizer
    kind = getattr(task, "kind", task)
    model = StabilizedModel(
        build_model(config.model, task, rng_utils.get_random_seed() if seed is None else seed),
        build_transform(stabilizer),
        nonfinite=nonfinite_policy(stabilizer),
        step_log=steps_per_epoch,
    )
    if kind == "classification":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        loss = keras.losses.MeanSquaredError()
        metrics = [keras.metrics.MeanMetricWrapper(within_tolerance, name="accuracy")]
    model.compile(
        optimizer=build_optimizer(config.optimizer, steps_per_epoch * config.training.epochs),
        loss=loss,
        metrics=metrics,
        jit_compile=config.training.jit_compile,
        steps_per_execution=steps_per_execution(config.training, steps_per_epoch),
    )
    return model
