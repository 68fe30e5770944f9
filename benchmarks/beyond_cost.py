"""Step-time cost of the pieces beyond clipping, against plain global-norm clipping, in one run.

    python benchmarks/beyond_cost.py [--rounds 5] [--model mlp|deep_mlp|both]   (about 5 minutes)

Doc 002's MLP (784-128-64-10) and the zoo's deep MLP (8 × 128) on 8,000 embedded MNIST digits, batch
100, SGD 0.01, through `StabilizedModel.fit` (shuffle off, 3 epochs per measurement):

- clip:         clip_by_global_norm(1.0), the baseline;
- adagc:        adagc() in its place;
- skip_spikes:  clip_by_global_norm(1.0) and skip_spikes();
- rollback:     the same, skip_spikes(max_consecutive=8, on_streak="rollback") and the
                RollbackOnSpike(every_n_steps=100) callback (it reads the batch logs: a host sync per step);
- sharpness:    one SharpnessMonitor measurement (20 Hessian-vector products, tolerance 0) on one
                batch of 100 and on 1,000 digits, against one training step of `clip`.

Every round runs each contender in a fresh random order; ratios are medians over rounds of that
round's ratio to `clip`.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import keras_stability as ks
from keras_stability.config.sections import DeepMlpConfig, MlpConfig
from keras_stability.datasets import mnist_small
from keras_stability.experiments.zoo import build_model

BATCH = 100
EPOCHS = 3
MODELS = {"mlp": MlpConfig, "deep_mlp": DeepMlpConfig}


def compiled(model_name, transform, spikes=None):
    keras.utils.set_random_seed(0)
    model = ks.stabilize(build_model(MODELS[model_name]()), transform, spikes=spikes)
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def contenders(model_name, x, y):
    def fitting(model, callbacks=()):
        def run():
            model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=list(callbacks))

        return run

    rollback_model = compiled(
        model_name, ks.clip_by_global_norm(1.0), ks.skip_spikes(max_consecutive=8, on_streak="rollback")
    )
    return {
        "clip": fitting(compiled(model_name, ks.clip_by_global_norm(1.0))),
        "adagc": fitting(compiled(model_name, ks.adagc())),
        "skip_spikes": fitting(compiled(model_name, ks.clip_by_global_norm(1.0), ks.skip_spikes())),
        "rollback": fitting(rollback_model, [ks.RollbackOnSpike(every_n_steps=100)]),
    }


def sharpness_seconds(model_name, x, y, size, repeats=5):
    model = compiled(model_name, ks.clip_by_global_norm(1.0))
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)
    images, labels = tf.convert_to_tensor(x[:size]), tf.convert_to_tensor(y[:size])
    measure = tf.function(
        lambda: ks.top_hessian_eigenvalue(model, images, labels, iterations=20, tolerance=0.0, training=False)
    )
    measure()
    start = time.perf_counter()
    for _ in range(repeats):
        float(measure())
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", choices=[*MODELS, "both"], default="both")
    arguments = parser.parse_args()
    images, labels = mnist_small()
    x, y = images[:8000].astype(np.float32), labels[:8000]
    steps = EPOCHS * len(y) // BATCH
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs; {steps} steps per measurement"
    )
    for model_name in MODELS if arguments.model == "both" else [arguments.model]:
        runs = contenders(model_name, x, y)
        for run in runs.values():
            run()  # traced and warmed up
        seconds = {name: [] for name in runs}
        rng = np.random.default_rng(0)
        for _ in range(arguments.rounds):
            for name in rng.permutation(list(runs)):
                start = time.perf_counter()
                runs[name]()
                seconds[name].append(time.perf_counter() - start)
        step = statistics.median(seconds["clip"]) / steps
        print(f"\n{model_name}: median step time of clip {step * 1e3:.3f} ms")
        for name, times in seconds.items():
            ratio = statistics.median(t / c for t, c in zip(times, seconds["clip"]))
            print(f"  {name:12s} {statistics.median(times) / steps * 1e3:8.3f} ms/step   ratio to clip {ratio:5.3f}")
        for size in (BATCH, 1000):
            measured = sharpness_seconds(model_name, x, y, size)
            print(
                f"  sharpness on {size:5d} digits: {measured * 1e3:8.1f} ms per measurement "
                f"(20 Hessian-vector products) = {measured / step:6.1f} training steps"
            )


if __name__ == "__main__":
    main()
