"""One worker of tests/test_multi_worker.py: trains under MultiWorkerMirroredStrategy, writes what it saw.

    TF_CONFIG=... python tests/multi_worker_job.py OUT.json

Each of the two workers feeds its half of every global batch of 8 to `StabilizedModel.train_step`
(through `strategy.run`), so the all-reduced gradient is the whole batch's, as on one device.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import tensorflow as tf

GLOBAL_BATCH = 8
COLLECTIVES = ("CollectiveReduceV2", "CollectiveReduceV3", "CollectiveReduce", "CollectiveAllToAllV2")


def spiky_data():
    """12 batches of a linear regression; batch 8's spike lies in worker 0's half only."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-1.0], [0.5]], np.float32)).astype(np.float32)
    y[64:68] += 200.0
    return x, y


def build(strategy_scope):
    import keras

    import keras_stability as ks

    with strategy_scope:
        inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="ones")])
        model = ks.stabilize(inner, ks.clip_by_global_norm(5.0), spikes=ks.skip_spikes(window=8, min_samples=6))
        model.compile(keras.optimizers.SGD(0.05), "mse")
        model.build((None, 3))
        model.optimizer.build(model.trainable_variables)
    return model


def main(out_path):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = strategy.cluster_resolver.task_id
    model = build(strategy.scope())
    x, y = spiky_data()
    half = GLOBAL_BATCH // strategy.num_replicas_in_sync

    @tf.function
    def step(images, targets):
        logs = strategy.run(model.train_step, args=((images, targets),))
        return {k: strategy.experimental_local_results(v)[0] for k, v in logs.items()}

    skipped = []
    for start in range(0, len(y), GLOBAL_BATCH):
        rows = slice(start + task * half, start + (task + 1) * half)
        logs = step(tf.constant(x[rows]), tf.constant(y[rows]))
        skipped.append(float(logs["spike_skipped_steps"]))
    graph = step.get_concrete_function(tf.constant(x[:half]), tf.constant(y[:half])).graph
    collectives = [op.type for op in graph.get_operations() if op.type in COLLECTIVES]
    with open(out_path, "w") as stream:
        json.dump(
            {
                "task": task,
                "replicas": strategy.num_replicas_in_sync,
                "weights": [w.tolist() for w in model.get_weights()],
                "history": model.optimizer.spikes.history.numpy().tolist(),
                "skipped": skipped,
                "iterations": int(model.optimizer.iterations.numpy()),
                "collectives": collectives,
                "gradients": len(model.trainable_variables),
            },
            stream,
        )


if __name__ == "__main__":
    main(sys.argv[1])
