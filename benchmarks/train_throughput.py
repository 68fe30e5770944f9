"""Training throughput: the runner's default path against a raw tf.function loop and Keras `fit`.

    python benchmarks/train_throughput.py [--repeats 5] [--epochs 3] [--model mlp|cnn3|both]

Contenders, all on the embedded MNIST training split (8,100 digits, batch 100, float32, SGD 0.01,
global norm clipped to 1.0), alternated within each repeat; the table shows the median steps/s:

- raw:        one tf.function runs the whole epoch (tf.data, tf.clip_by_global_norm, no telemetry);
- keras_fit:  Keras `fit` with default settings and `global_clipnorm=1.0`;
- runner:     what `keras-stability run` trains with (`compiled_model`, `epoch_dataset`):
              StabilizedModel + clip_by_global_norm, full telemetry (grad_norm, clipped_norm,
              clip_rate, nonfinite_steps, per-step StepLog), steps_per_execution = the epoch;
- no_telemetry: StabilizedOptimizer in a plain Keras model, same input pipeline and execution.

Ratios: P1 = runner / raw (goal ≥ 0.95), P2 = runner / keras_fit (goal ≥ 1.8), P3 = no_telemetry /
runner − 1 (telemetry cost, goal ≤ 3 %). Peak RSS is that of the whole benchmark process.
"""

import argparse
import os
import platform
import resource
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_stability as ks  # noqa: E402
from keras_stability.datasets import load_dataset  # noqa: E402
from keras_stability.experiments.schema import (  # noqa: E402
    ClipByGlobalNormSpec,
    DatasetConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
    StabilizerConfig,
    TrainingConfig,
)
from keras_stability.experiments.training import compiled_model, epoch_dataset  # noqa: E402
from keras_stability.experiments.zoo import build_model  # noqa: E402

BATCH = 100
LEARNING_RATE = 0.01
MAX_NORM = 1.0


def loss_fn():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def raw_contender(model_name, x, y):
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(name=model_name))
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    optimizer.build(model.trainable_variables)
    compute_loss = loss_fn()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().prefetch(tf.data.AUTOTUNE)

    @tf.function
    def epoch():
        for images, labels in dataset:
            with tf.GradientTape() as tape:
                loss = compute_loss(labels, model(images, training=True))
            gradients = tape.gradient(loss, model.trainable_variables)
            gradients, _ = tf.clip_by_global_norm(gradients, MAX_NORM)
            optimizer.apply(gradients, model.trainable_variables)

    return epoch


def fit_contender(model, x, y):
    def epoch():
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)

    return epoch


def keras_fit(model_name, x, y):
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(name=model_name))
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, global_clipnorm=MAX_NORM), loss=loss_fn())
    return fit_contender(model, x, y)


def runner_default(model_name, x, y):
    """The runner's own path: `compiled_model` and `epoch_dataset`, as `keras-stability run` trains."""
    keras.utils.set_random_seed(0)
    steps = -(-len(y) // BATCH)
    config = RunConfig(
        name="benchmark", model=ModelConfig(name=model_name), optimizer=OptimizerConfig(learning_rate=LEARNING_RATE),
        stabilizer=StabilizerConfig(transforms=[ClipByGlobalNormSpec(name="clip_by_global_norm", max_norm=MAX_NORM)]),
        training=TrainingConfig(batch_size=BATCH),
    )
    model = compiled_model(config, steps, "classification")
    x_tensor, y_tensor = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    order = np.arange(len(y))

    def epoch():
        model.fit(epoch_dataset(x_tensor, y_tensor, order, BATCH), epochs=1, shuffle=False, verbose=0)
        model.step_log.drain()  # once per epoch, as the runner does

    return epoch


def no_telemetry(model_name, x, y):
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(name=model_name))
    optimizer = ks.StabilizedOptimizer(keras.optimizers.SGD(LEARNING_RATE), ks.clip_by_global_norm(MAX_NORM))
    model.compile(optimizer=optimizer, loss=loss_fn(), steps_per_execution=-(-len(y) // BATCH))
    x_tensor, y_tensor = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    order = np.arange(len(y))

    def epoch():
        model.fit(epoch_dataset(x_tensor, y_tensor, order, BATCH), epochs=1, shuffle=False, verbose=0)

    return epoch


CONTENDERS = {"raw": raw_contender, "keras_fit": keras_fit, "runner": runner_default, "no_telemetry": no_telemetry}


def measure(model_name, x, y, repeats, epochs):
    steps = -(-len(y) // BATCH) * epochs
    epochs_by_name = {name: make(model_name, x, y) for name, make in CONTENDERS.items()}
    for epoch in epochs_by_name.values():  # trace and warm up
        epoch()
    rates = {name: [] for name in CONTENDERS}
    for _ in range(repeats):
        for name, epoch in epochs_by_name.items():
            start = time.perf_counter()
            for _ in range(epochs):
                epoch()
            rates[name].append(steps / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed repeat")
    parser.add_argument("--model", choices=["mlp", "cnn3", "both"], default="both")
    args = parser.parse_args()
    splits = load_dataset(DatasetConfig(name="mnist_small"), 0)
    x, y = splits.x_train, splits.y_train
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}; {len(y)} examples, batch {BATCH}")
    models = ["mlp", "cnn3"] if args.model == "both" else [args.model]
    ratios = {}
    for model_name in models:
        rates = measure(model_name, x, y, args.repeats, args.epochs if model_name == "mlp" else 1)
        print(f"\n{model_name}: steps/s (median of {args.repeats})")
        for name, rate in rates.items():
            print(f"  {name:13s} {rate:8.1f}")
        ratios[model_name] = {
            "P1 runner/raw": rates["runner"] / rates["raw"],
            "P2 runner/keras_fit": rates["runner"] / rates["keras_fit"],
            "P3 telemetry cost": rates["no_telemetry"] / rates["runner"] - 1,
        }
        for name, value in ratios[model_name].items():
            print(f"  {name:22s} {value:+.1%}" if name.startswith("P3") else f"  {name:22s} {value:.2f}")
    if len(ratios) == 2:
        for key in ratios["mlp"]:
            print(f"P4 {key}: cnn3 {ratios['cnn3'][key]:.3f} vs mlp {ratios['mlp'][key]:.3f}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
