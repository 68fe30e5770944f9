"""Training throughput: the runner's default path against raw tf.function loops and Keras `fit`.

    python benchmarks/train_throughput.py [--rounds 15] [--model mlp|cnn3|both]   (about 7 minutes)

Contenders, all on the embedded MNIST training split (8,100 digits, batch 100, float32, SGD 0.01,
global norm clipped to 1.0):

- raw:          one tf.function runs the whole epoch, each batch gathered from device tensors by
                index, tf.clip_by_global_norm, no telemetry, no metric (the fastest loop we know);
- raw_tf_data:  the same loop reading its batches from a cached, prefetched `tf.data` pipeline;
- keras_fit:    Keras `fit` with default settings and `global_clipnorm=1.0`;
- runner:       what `keras-stability run` trains with (`compiled_model`, `fit_epoch`, hence
                `train_epoch`): StabilizedModel + clip_by_global_norm, accuracy, full telemetry
                (grad_norm, clipped_norm, clip_rate, nonfinite_steps, per-step StepLog);
- no_telemetry: the same execution and accuracy metric with a plain Keras model around
                StabilizedOptimizer: no telemetry, no step log;
- runner_jit:   the runner with `training.jit_compile: true` (XLA).

Every round runs each contender for `EPOCHS_PER_ROUND` epochs, in a fresh random order. Ratios are
the median over rounds of that round's ratio (the goals are judged on these), and of the best rates.
P1 = runner / raw (goal ≥ 0.95), P2 = runner / keras_fit (goal ≥ 1.8), P3 = no_telemetry / runner − 1
(telemetry cost, goal ≤ 3 %), P4: the cnn3 ratios against the MLP's (goal: within 5 %);
XLA = runner_jit / runner. "cores busy" is process CPU time / wall time: paths that read `tf.data`
run a whole epoch's kernels on one core or on two at random (oneDNN goes single-threaded when
TensorFlow's iterator hands the step to a thread of its intra-op pool); the others do not.
Peak RSS is that of one `keras-stability run` process training one quickstart run.
"""

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
import yaml

import keras_stability as ks
from keras_stability.config.schema import (
    ClipByGlobalNormSpec,
    OptimizerConfig,
    RunConfig,
    StabilizerConfig,
    TrainingConfig,
)
from keras_stability.config.sections import DATASET_SPECS, MODEL_SPECS
from keras_stability.datasets import load_dataset
from keras_stability.experiments.runner import fit_epoch
from keras_stability.experiments.training import compiled_model
from keras_stability.experiments.zoo import build_model

BATCH = 100
LEARNING_RATE = 0.01
MAX_NORM = 1.0
# An MLP epoch takes ~0.1 s: three per measurement keep timer and scheduler noise small.
EPOCHS_PER_ROUND = {"mlp": 3, "cnn3": 1}


def loss_fn():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def raw_contender(model_name, x, y, use_tf_data=False):
    """The whole epoch in one tf.function: batches gathered in the graph, or read from `tf.data`."""
    keras.utils.set_random_seed(0)
    model = build_model(MODEL_SPECS[model_name]())
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    optimizer.build(model.trainable_variables)
    compute_loss = loss_fn()

    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = compute_loss(labels, model(images, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        gradients, _ = tf.clip_by_global_norm(gradients, MAX_NORM)
        optimizer.apply(gradients, model.trainable_variables)

    if use_tf_data:
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().prefetch(tf.data.AUTOTUNE)

        @tf.function
        def epoch():
            for images, labels in dataset:
                step(images, labels)

        return epoch

    x_tensor, y_tensor = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    batches = tf.reshape(tf.range(len(y)), (-1, BATCH))

    @tf.function
    def epoch():
        for i in tf.range(len(batches)):
            step(tf.gather(x_tensor, batches[i]), tf.gather(y_tensor, batches[i]))

    return epoch


def raw_tf_data(model_name, x, y):
    return raw_contender(model_name, x, y, use_tf_data=True)


def keras_fit(model_name, x, y):
    keras.utils.set_random_seed(0)
    model = build_model(MODEL_SPECS[model_name]())
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, global_clipnorm=MAX_NORM), loss=loss_fn())

    def epoch():
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)

    return epoch


def runner_default(model_name, x, y, jit_compile=False):
    """The runner's own path: `compiled_model` and `fit_epoch`, as `keras-stability run` trains."""
    keras.utils.set_random_seed(0)
    steps = -(-len(y) // BATCH)
    config = RunConfig(
        name="benchmark",
        model=MODEL_SPECS[model_name](),
        optimizer=OptimizerConfig(learning_rate=LEARNING_RATE),
        stabilizer=StabilizerConfig(transforms=[ClipByGlobalNormSpec(name="clip_by_global_norm", max_norm=MAX_NORM)]),
        training=TrainingConfig(batch_size=BATCH, jit_compile=jit_compile),
    )
    model = compiled_model(config, steps, "classification")
    x_tensor, y_tensor = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    order = np.arange(len(y))

    def epoch():
        fit_epoch(model, config.training, x_tensor, y_tensor, order, 1)
        model.step_log.drain()  # once per epoch, as the runner does

    return epoch


def no_telemetry(model_name, x, y):
    """The runner's execution (`train_epoch`, accuracy metric) with a plain Keras model around
    `StabilizedOptimizer`: no telemetry metrics, no step log."""
    keras.utils.set_random_seed(0)
    model = build_model(MODEL_SPECS[model_name]())
    optimizer = ks.StabilizedOptimizer(keras.optimizers.SGD(LEARNING_RATE), ks.clip_by_global_norm(MAX_NORM))
    model.compile(
        optimizer=optimizer, loss=loss_fn(), metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    )
    x_tensor, y_tensor = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    order = np.arange(len(y))

    def epoch():
        ks.train_epoch(model, x_tensor, y_tensor, order, BATCH)

    return epoch


def runner_jit(model_name, x, y):
    """The runner with `training.jit_compile: true` (XLA), to see whether it pays on this machine."""
    return runner_default(model_name, x, y, jit_compile=True)


CONTENDERS = {
    "raw": raw_contender,
    "raw_tf_data": raw_tf_data,
    "keras_fit": keras_fit,
    "runner": runner_default,
    "no_telemetry": no_telemetry,
    "runner_jit": runner_jit,
}


RATIOS = {
    "P1 runner/raw": lambda r: r["runner"] / r["raw"],
    "runner/raw_tf_data": lambda r: r["runner"] / r["raw_tf_data"],
    "P2 runner/keras_fit": lambda r: r["runner"] / r["keras_fit"],
    "P3 telemetry cost": lambda r: r["no_telemetry"] / r["runner"] - 1,
    "XLA runner_jit/runner": lambda r: r["runner_jit"] / r["runner"],
}


def measure(model_name, x, y, rounds):
    """Steps/s and cores busy (process CPU time / wall time) per contender and round.

    Each round runs every contender for `EPOCHS_PER_ROUND` epochs, in a fresh random order.
    """
    steps = -(-len(y) // BATCH)
    epochs = {name: make(model_name, x, y) for name, make in CONTENDERS.items()}
    for epoch in epochs.values():  # trace and warm up
        epoch()
    order = np.random.default_rng(0)
    per_round = []
    for _ in range(rounds):
        measured = {}
        for name in order.permutation(list(epochs)):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(EPOCHS_PER_ROUND[model_name]):
                epochs[name]()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            measured[name] = (EPOCHS_PER_ROUND[model_name] * steps / wall, cpu / wall)
        per_round.append(measured)
    return per_round


def summarize(per_round):
    """Best and median steps/s, median cores busy, and ratios: median per round, and of best rates."""
    rates = {name: [r[name][0] for r in per_round] for name in CONTENDERS}
    best = {name: max(values) for name, values in rates.items()}
    table = {
        name: (best[name], statistics.median(values), statistics.median(r[name][1] for r in per_round))
        for name, values in rates.items()
    }
    ratios = {
        key: (statistics.median(ratio({n: r[n][0] for n in r}) for r in per_round), ratio(best))
        for key, ratio in RATIOS.items()
    }
    return table, ratios


def one_run_peak_rss_mib():
    """Peak RSS of a `keras-stability run` process training one run: quickstart's clipped variant."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "experiments", "quickstart.yaml"), encoding="utf-8") as stream:
        experiment = yaml.safe_load(stream)
    experiment.update(
        seeds=[0], baseline=None, variants={"clip_global_norm_1": experiment["variants"]["clip_global_norm_1"]}
    )
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "one_run.yaml")
        with open(path, "w", encoding="utf-8") as stream:
            yaml.safe_dump(experiment, stream)
        subprocess.run(
            [sys.executable, "-m", "keras_stability.cli", "run", path, "--results", scratch, "--no-progress"],
            check=True,
            capture_output=True,
        )
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            names = [line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def ratio_text(key, ratio):
    median, best = (f"{value:+.1%}" if key.startswith("P3") else f"{value:.2f}" for value in ratio)
    return f"{median:>17s} {best:>9s}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of one epoch per contender (default: 15)")
    parser.add_argument("--model", choices=["mlp", "cnn3", "both"], default="both")
    args = parser.parse_args()
    splits = load_dataset(DATASET_SPECS["mnist_small"](), 0)
    x, y = splits.x_train, splits.y_train
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}; {len(y)} examples, batch {BATCH}"
    )
    models = ["mlp", "cnn3"] if args.model == "both" else [args.model]
    ratios = {}
    for model_name in models:
        table, ratios[model_name] = summarize(measure(model_name, x, y, args.rounds))
        print(f"\n{model_name} ({args.rounds} rounds)   best steps/s  median steps/s  median cores busy")
        for name, (best, median, busy) in table.items():
            print(f"  {name:13s} {best:14.1f} {median:15.1f} {busy:18.2f}")
        print(f"  {'ratio':22s} median per round   of best")
        for key, ratio in ratios[model_name].items():
            print(f"  {key:22s} {ratio_text(key, ratio)}")
    if len(ratios) == 2:
        print()
        for key in [k for k in RATIOS if k.startswith("P")]:
            cnn, mlp = ratios["cnn3"][key][0], ratios["mlp"][key][0]
            change = f"{cnn - mlp:+.1%} points" if key.startswith("P3") else f"{cnn / mlp - 1:+.1%}"
            print(f"P4 {key} (median per round): cnn3 {cnn:.3f} vs mlp {mlp:.3f} ({change})")
    print(f"\npeak RSS of one run: {one_run_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
