"""Sweep throughput (issue #13): how close `keras-stability run` on a whole experiment gets to its steps.

    python benchmarks/suite_throughput.py [EXPERIMENT] [--set KEY=VALUE ...] [--code DIR] [--memory]

Efficiency = (total steps ÷ the steady-state steps/s of a raw `tf.function` loop on the same model)
÷ (wall time of `keras-stability run` on the whole experiment − the time to import TensorFlow).
The raw loop runs one epoch per call, batches gathered from device tensors, the experiment's model
and SGD (its learning rate and momentum), `tf.clip_by_global_norm(·, 1.0)`, no metric; its rate is
the median over epochs after a warm-up. The run itself happens in a child process on the code in
`--code` (default: this checkout; point it at another checkout to measure "before"), into a
temporary results directory.

Per-run fixed cost, from the runs' timing.csv and the raw rate: first epoch (its seconds less its
steps at the raw rate), later epochs' overhead (the same, averaged over later epochs) and per-run
setup (wall time past import not spent in any epoch, per run).

`--memory` also trains 100 one-epoch runs of a small MLP experiment in one child process and
prints its peak RSS after 10 and after 100 runs (goal: within 10 %).
"""

import argparse
import csv
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The raw loop and the step counts use this checkout's package, whatever is installed.
sys.path.insert(0, HERE)
RAW_EPOCHS = 7
MEMORY_PROBE = """
import os, sys
from keras_stability.config.loading import load_experiment
from keras_stability.experiments.runner import run_one

def peak_rss_mib():
    with open("/proc/self/status") as stream:
        return next(int(line.split()[1]) for line in stream if line.startswith("VmHWM")) / 1024

experiment = load_experiment(sys.argv[1], ["seeds=" + str(list(range(50)))])
runs = experiment.runs()
for count, (variant, seed, config) in enumerate(runs, start=1):
    run_one(sys.argv[2], config, variant, seed, log=lambda _: None)
    if count in (10, len(runs)):
        print(count, round(peak_rss_mib(), 1), flush=True)
"""
MEMORY_EXPERIMENT = """\
name: memory
seeds: [0]
dataset: {name: mnist_small, train_size: 2000}
model: {name: mlp, hidden: [128, 64], dropout: 0.1}
optimizer: {name: sgd, learning_rate: 0.05, momentum: 0.9}
training: {epochs: 1, batch_size: 100}
variants:
  no_clip: {stabilizer: null}
  clipped: {stabilizer: {transforms: [{name: clip_by_global_norm, max_norm: 1.0}]}}
"""


def child_environment(code):
    return {**os.environ, "PYTHONPATH": code, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}


def import_seconds(code):
    """Seconds for a fresh interpreter to import TensorFlow and Keras (best of three)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import tensorflow, keras"],
            env=child_environment(code),
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - started)
    return min(times)


def run_experiment(code, experiment, overrides, results):
    command = [sys.executable, "-m", "keras_stability.cli", "run", experiment, "--results", results, "--no-progress"]
    for override in overrides:
        command += ["--set", override]
    started = time.perf_counter()
    # In `code`'s directory: `python -m` puts the working directory ahead of PYTHONPATH.
    completed = subprocess.run(command, cwd=code, env=child_environment(code), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    return wall, completed.stdout.strip().splitlines()[-1]


def csv_rows(path):
    """A CSV's data rows; a finished run's step log may be gzipped (`steps.csv.gz`, `step_logs`)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))[1:]


def run_timings(results):
    """[(steps per epoch, [seconds of each epoch])] for every run under `results`."""
    runs = []
    for directory, _, files in sorted(os.walk(results)):
        step_log = next((name for name in ("steps.csv", "steps.csv.gz") if name in files), None)
        if "timing.csv" in files and step_log:
            steps = csv_rows(os.path.join(directory, step_log))
            seconds = [float(row[1]) for row in csv_rows(os.path.join(directory, "timing.csv"))]
            runs.append((len(steps) // max(1, len(seconds)), seconds, len(steps)))
    return runs


def raw_steps_per_second(experiment, overrides):
    """Steady-state steps/s of a raw tf.function epoch loop on the experiment's model and data."""
    import keras
    import tensorflow as tf

    from keras_stability.config.loading import load_experiment
    from keras_stability.datasets import load_dataset
    from keras_stability.experiments.zoo import build_model

    _, seed, config = load_experiment(experiment, overrides).runs()[0]
    splits = load_dataset(config.dataset, seed)
    keras.utils.set_random_seed(seed)
    model = build_model(config.model)
    optimizer = keras.optimizers.SGD(config.optimizer.learning_rate, momentum=config.optimizer.momentum)
    optimizer.build(model.trainable_variables)
    if splits.task.kind == "classification":
        compute_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        compute_loss = keras.losses.MeanSquaredError()
    batch = config.training.batch_size
    x, y = tf.convert_to_tensor(splits.x_train), tf.convert_to_tensor(splits.y_train)
    full = len(splits.y_train) // batch
    batches = tf.reshape(tf.range(full * batch), (full, batch))

    @tf.function
    def epoch():
        for i in tf.range(full):
            with tf.GradientTape() as tape:
                loss = compute_loss(tf.gather(y, batches[i]), model(tf.gather(x, batches[i]), training=True))
            gradients = tape.gradient(loss, model.trainable_variables)
            gradients, _ = tf.clip_by_global_norm(gradients, 1.0)
            optimizer.apply(gradients, model.trainable_variables)
        return optimizer.iterations

    epoch()  # traced and warmed up
    rates = []
    for _ in range(RAW_EPOCHS):
        started = time.perf_counter()
        epoch().numpy()
        rates.append(full / (time.perf_counter() - started))
    return statistics.median(rates)


def memory_probe(code):
    with tempfile.TemporaryDirectory() as scratch:
        experiment = os.path.join(scratch, "memory.yaml")
        with open(experiment, "w", encoding="utf-8") as stream:
            stream.write(MEMORY_EXPERIMENT)
        completed = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, experiment, os.path.join(scratch, "results")],
            env=child_environment(code),
            capture_output=True,
            text=True,
            check=True,
        )
    (after_10, rss_10), (after_all, rss_all) = [line.split() for line in completed.stdout.strip().splitlines()]
    return int(after_10), float(rss_10), int(after_all), float(rss_all)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", default=os.path.join(HERE, "experiments", "doc002_mlp.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--code", default=HERE, help="checkout whose keras_stability runs the experiment")
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS after 10 and 100 runs")
    arguments = parser.parse_args()
    code = os.path.abspath(arguments.code)

    with tempfile.TemporaryDirectory() as results:
        wall, outcome = run_experiment(code, os.path.abspath(arguments.experiment), arguments.overrides, results)
        runs = run_timings(results)
    importing = import_seconds(code)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    raw = raw_steps_per_second(arguments.experiment, arguments.overrides)

    total_steps = sum(steps for _, _, steps in runs)
    past_import = wall - importing
    efficiency = total_steps / raw / past_import
    first = [seconds[0] - per_epoch / raw for per_epoch, seconds, _ in runs]
    later = [s - per_epoch / raw for per_epoch, seconds, _ in runs for s in seconds[1:]]
    later_mean = statistics.mean(later) if later else 0.0
    setup = (past_import - sum(sum(seconds) for _, seconds, _ in runs)) / len(runs)
    print(
        textwrap.dedent(f"""\
        experiment: {arguments.experiment} {" ".join("--set " + o for o in arguments.overrides)}
        code: {code}
        outcome: {outcome}
        runs {len(runs)}, steps {total_steps}; raw loop {raw:.1f} steps/s (steps alone: {total_steps / raw:.1f} s)
        wall {wall:.1f} s, import {importing:.1f} s, past import {past_import:.1f} s
        sweep efficiency {efficiency:.2f}""")
    )
    print(
        f"per run: first epoch +{statistics.mean(first):.3f} s, later epochs +{later_mean:.3f} s each, "
        f"setup {setup:.3f} s"
    )
    if arguments.memory:
        after_10, rss_10, after_all, rss_all = memory_probe(code)
        print(
            f"peak RSS: {rss_10:.0f} MiB after {after_10} runs, {rss_all:.0f} MiB after {after_all} "
            f"({rss_all / rss_10 - 1:+.1%})"
        )


if __name__ == "__main__":
    main()
