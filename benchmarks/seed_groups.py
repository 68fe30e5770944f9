"""Several seeds in one graph (issue #13's stretch goal): what it would buy on this machine, measured.

    python benchmarks/seed_groups.py [EXPERIMENT] [--epochs E]

Trains each variant's seeds (the experiment's seed list) for E epochs three ways on the runner's
single-device path, and compares the bits (every step's loss and norms, every epoch's logs):

- apart, as the runner trains them: one model per process and variant (`run_cache.model_for_run`),
  re-initialised for each seed, each epoch one `train_epoch` call, whose loop inlines `train_step`;
- apart, step out of line: one model per seed; the step is traced once, for the first model, and
  every model's epoch loop calls it bound to that model's variables, by passing their handles in
  place of the first model's captures (`ConcreteFunction._call_flat`, a private TensorFlow API);
  the step stays a function of its own (`_noinline`), so TensorFlow instantiates it once;
- together: the same step, and one epoch loop for all seeds that calls it once per seed per step.

Grappler optimises a step inlined into the loop differently from a step out of line, and for some
transforms that changes the last bit of a result: seeds trained together are bit-identical to
seeds trained apart only when both call the step out of line.

For each variant and design it prints the one-off cost of the variant's graph (the first epoch's
seconds less a steady epoch's) and the steady seed-steps/s, then the ceiling each design puts on the
experiment's sweep efficiency (`suite_throughput.py`) were nothing else to cost time: its steps at
the raw loop's rate ÷ the sum over variants of (graph cost + the variant's steps at the design's
rate). Validation, checkpoints and set-up come on top in a real run.
"""

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
from suite_throughput import HERE, raw_steps_per_second  # this script's directory is on sys.path

from keras_stability.epoch_loop import train_epoch
from keras_stability.experiments.loading import load_experiment
from keras_stability.experiments.run_cache import forget_everything, model_for_run, splits_for_run
from keras_stability.experiments.runner import configure_determinism
from keras_stability.experiments.training import compiled_model


def epoch_order(seed, epoch, examples):
    return np.random.default_rng([seed, epoch]).permutation(examples)  # the runner's order


def apart(configs, data, steps_per_epoch, epochs):
    """(per seed, [(epoch logs, step rows)]; its graph cost in s; its steady seed-steps/s), trained
    as the runner trains them: the first seed's first epoch traces the variant's graph, which
    later seeds reuse."""
    results, seconds = [], []
    for seed, config in configs:
        configure_determinism(seed)
        model = model_for_run(config, steps_per_epoch, data.splits.task, seed)
        trained = []
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            order = epoch_order(seed, epoch, len(data.splits.y_train))
            logs = train_epoch(model, data.x_train, data.y_train, order, config.training.batch_size)
            trained.append((logs, model.step_log.drain().copy()))
            seconds.append(time.perf_counter() - started)
        results.append(trained)
    steady = statistics.median(s for i, s in enumerate(seconds) if i % epochs)
    return results, seconds[0] - steady, steps_per_epoch / steady


def state_handles(model):
    """Every variable's resource handle that a traced `train_step` may capture, in a fixed order."""
    variables = [
        *model.variables,
        *model.optimizer.variables,
        *(variable for metric in model.metrics for variable in metric.variables),
        *model.telemetry.variables,
    ]
    return [getattr(v, "value", v).handle for v in variables] + [
        model.step_log.rows.handle,
        model.step_log.count.handle,
    ]


def built_model(config, steps_per_epoch, data, seed):
    configure_determinism(seed)
    model = compiled_model(config, steps_per_epoch, data.splits.task, seed)
    model.optimizer.build(model.trainable_variables)
    batch = config.training.batch_size
    x, y = data.x_train[:batch], data.y_train[:batch]
    model._maybe_symbolic_build(data_batch=(x, y, None))
    model._compile_metrics.build(y, model(x))  # Keras builds them in the first traced step otherwise
    return model


def together(configs, data, steps_per_epoch, epochs, group):
    """What `apart` returns, for seeds trained `group` at a time: every epoch one call per group,
    whose loop calls one traced step (traced once, for the first seed) with each seed's variables."""
    batch = configs[0][1].training.batch_size
    models = [built_model(config, steps_per_epoch, data, seed) for seed, config in configs]
    started = time.perf_counter()

    def step(x, y, indices):
        return models[0].train_step((tf.gather(x, indices), tf.gather(y, indices)))

    traced = tf.function(step, autograph=False, experimental_attributes={"_noinline": True})
    step_function = traced.get_concrete_function(data.x_train, data.y_train, tf.TensorSpec([batch], tf.int32))
    first = {id(handle): i for i, handle in enumerate(state_handles(models[0]))}
    positions = [first.get(id(captured)) for captured in step_function.captured_inputs]
    if any(i is None and c.dtype == tf.resource for c, i in zip(step_function.captured_inputs, positions)):
        raise SystemExit("the step captures a variable that `state_handles` does not list")
    captures = [
        [captured if i is None else handles[i] for captured, i in zip(step_function.captured_inputs, positions)]
        for handles in map(state_handles, models)
    ]
    examples = len(data.splits.y_train)
    full = examples // batch
    if full * batch != examples:
        raise SystemExit("this probe needs a batch size that divides the training set")

    def group_epoch(members):
        @tf.function(autograph=False)
        def epoch(x, y, orders):
            batches = tf.reshape(orders, (len(members), full, batch))

            def body(i):
                for k, member in enumerate(members):
                    step_function._call_flat([x, y, batches[k, i]], captures[member])
                return i + 1

            tf.while_loop(lambda i: i < full - 1, body, [tf.constant(0)])
            return [step_function._call_flat([x, y, batches[k, -1]], captures[m]) for k, m in enumerate(members)]

        return epoch

    results, seconds = [[] for _ in models], []
    for start in range(0, len(models), group):
        members = list(range(start, min(start + group, len(models))))
        epoch_function = group_epoch(members)
        for epoch in range(1, epochs + 1):
            for member in members:
                models[member].reset_metrics()
            orders = np.stack([epoch_order(configs[m][0], epoch, examples) for m in members]).astype(np.int32)
            outputs = epoch_function(data.x_train, data.y_train, tf.constant(orders))
            for member, output in zip(members, outputs, strict=True):
                logs = {name: float(value) for name, value in output.items()}
                results[member].append((logs, models[member].step_log.drain().copy()))
            seconds.append(time.perf_counter() - started)  # the very first includes the step's trace
            started = time.perf_counter()
    steady = statistics.median(s for i, s in enumerate(seconds) if i % epochs)
    return results, seconds[0] - steady, group * full / steady


def same_bits(a, b):
    return all(
        logs_a == logs_b and np.array_equal(rows_a, rows_b, equal_nan=True)
        for runs_a, runs_b in zip(a, b, strict=True)
        for (logs_a, rows_a), (logs_b, rows_b) in zip(runs_a, runs_b, strict=True)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", default=os.path.join(HERE, "experiments", "doc002_mlp.yaml"))
    parser.add_argument("--epochs", type=int, default=4, help="epochs per seed and design (default: 4)")
    arguments = parser.parse_args()
    experiment = load_experiment(arguments.experiment, [])
    runs = experiment.runs()
    raw = raw_steps_per_second(arguments.experiment, [])
    print(
        f"experiment: {experiment.name} ({len(experiment.variants)} variants, {len(runs)} runs); raw loop {raw:.0f} steps/s"
    )
    print(
        f"{'variant':16s}{'design':>25s}{'graph (trace + 1st run)':>26s}{'seed-steps/s':>14s}"
        "   same bits as: apart, out of line"
    )
    seconds, total_steps = {}, 0
    for variant in experiment.variants:
        configs = [(seed, config) for name, seed, config in runs if name == variant]
        training = configs[0][1].training
        if training.distribute != "none" or training.steps_per_execution != "auto":
            raise SystemExit("this probe measures the runner's single-device path (steps_per_execution: auto)")
        data = splits_for_run(configs[0][1].dataset, configs[0][0])
        steps_per_epoch = math.ceil(len(data.splits.y_train) / training.batch_size)
        steps = len(configs) * training.epochs * steps_per_epoch
        total_steps += steps
        forget_everything()
        designs = {
            "apart": apart(configs, data, steps_per_epoch, arguments.epochs),
            "apart, step out of line": together(configs, data, steps_per_epoch, arguments.epochs, 1),
            f"together ({len(configs)} seeds)": together(
                configs, data, steps_per_epoch, arguments.epochs, len(configs)
            ),
        }
        runner, out_of_line, _ = (results for results, _, _ in designs.values())
        for design, (results, graph, rate) in designs.items():
            seconds[design] = seconds.get(design, 0.0) + graph + steps / rate
            same = [same_bits(runner, results), same_bits(out_of_line, results)]
            marks = "  ".join("yes" if equal else "NO" for equal in same)
            print(f"{variant:16s}{design:>25s}{graph:>24.2f} s{rate:>14.0f}   {marks}")
    print(f"ceiling of the sweep efficiency (graphs and steps alone, {total_steps} steps):")
    for design, spent in seconds.items():
        print(f"  {design:25s} {total_steps / raw / spent:.2f}")


if __name__ == "__main__":
    main()
