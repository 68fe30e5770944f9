"""Several seeds in one graph (issue #13's stretch goal): what it would buy on this machine, measured.

    python benchmarks/seed_groups.py [EXPERIMENT] [--epochs E]

Trains each variant's seeds (the experiment's seed list) for E epochs four ways on the runner's
single-device path, and compares the bits (every step's loss and norms, every epoch's logs):

- apart, as the runner trains them: one model per process and variant (`run_cache.model_for_run`),
  re-initialised for each seed, each epoch one `train_epoch` call, whose loop inlines `train_step`;
- apart, step out of line: the same, with the loop calling the step as a function of its own
  (`_noinline`) instead of inlining it;
- together: one model per seed and one epoch loop for all of them, which calls at every step one
  step function per seed. The step is traced once, for the first model, and each seed's call binds
  it to that seed's variables by passing their handles in place of the first model's captures
  (`ConcreteFunction._call_flat`, a private TensorFlow API); it stays out of line, so TensorFlow
  instantiates it once, not once per seed;
- together, traced per seed: that loop calling each model's own `train_step` (public API only),
  so that it holds one traced, inlined step per seed.

Grappler optimises a step inlined into the loop differently from a step out of line, and for some
transforms that changes the last bit of a result.

For each variant and design it prints the one-off cost of the variant's graph (what its first epoch
took beyond a steady epoch) and the steady seed-steps/s, then the ceiling each design puts on the
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

from keras_stability.config.loading import load_experiment
from keras_stability.epoch_loop import train_epoch
from keras_stability.experiments.run_cache import forget_everything, model_for_run, splits_for_run
from keras_stability.experiments.runner import configure_determinism, epoch_order
from keras_stability.experiments.training import compiled_model


def apart(configs, data, steps_per_epoch, epochs, out_of_line=False):
    """(per seed, [(epoch logs, step rows)], then `graph_and_rate`), trained as the runner trains
    them — one model per variant re-initialised for each seed, whose first epoch traces the graph
    that later seeds reuse — with the runner's `train_epoch`, or with `out_of_line_epoch`."""
    results, seconds, epoch_functions = [], [], {}
    for seed, config in configs:
        configure_determinism(seed)
        model = model_for_run(config, steps_per_epoch, data.splits.task, seed)
        trained = []
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            order = epoch_order(seed, epoch, len(data.splits.y_train))
            if out_of_line:
                if model not in epoch_functions:
                    epoch_functions[model] = out_of_line_epoch(model, data, config.training.batch_size)
                model.reset_metrics()
                output = epoch_functions[model](data.x_train, data.y_train, tf.constant(order, tf.int32))
                logs = {name: float(value) for name, value in output.items()}
            else:
                logs = train_epoch(model, data.x_train, data.y_train, order, config.training.batch_size)
            trained.append((logs, model.step_log.drain().copy()))
            seconds.append(time.perf_counter() - started)
        results.append(trained)
    return (results, *graph_and_rate(seconds, epochs, steps_per_epoch))


def out_of_line_epoch(model, data, batch):
    """`train_epoch`'s loop, calling the model's step as a function of its own (`_noinline`)."""
    prepare(model, data, batch)
    full = divisible(len(data.splits.y_train), batch)

    @tf.function(autograph=False, experimental_attributes={"_noinline": True})
    def step(x, y, indices):
        return model.train_step((tf.gather(x, indices), tf.gather(y, indices)))

    @tf.function(autograph=False)
    def epoch(x, y, order):
        batches = tf.reshape(order, (full, batch))

        def body(i):
            step(x, y, batches[i])
            return i + 1

        tf.while_loop(lambda i: i < full - 1, body, [tf.constant(0)])
        return step(x, y, batches[-1])

    return epoch


def divisible(examples, batch):
    if examples % batch:
        raise SystemExit("this probe needs a batch size that divides the training set")
    return examples // batch


def graph_and_rate(seconds, epochs, steps_per_call):
    """(graph cost in s, steady seed-steps/s) from the seconds of each epoch call, `epochs` calls
    per seed or group: what the first call took beyond a steady one (later seeds reuse its graph),
    and the median rate of the calls that are not a seed's first."""
    steady = statistics.median(s for i, s in enumerate(seconds) if i % epochs)
    return seconds[0] - steady, steps_per_call / steady


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
    prepare(model, data, config.training.batch_size)
    return model


def prepare(model, data, batch):
    """Creates every variable a traced step uses, which no step may create inside a loop."""
    x, y = data.x_train[:batch], data.y_train[:batch]
    model._maybe_symbolic_build(data_batch=(x, y, None))
    if not model._compile_metrics.built:  # Keras builds them in the first traced step otherwise
        model._compile_metrics.build(y, model(x))


def bound_steps(models, data, batch):
    """One step function per model, all calling one step traced for the first model, out of line,
    bound to each model's variables in place of the first model's captures."""

    def step(x, y, indices):
        return models[0].train_step((tf.gather(x, indices), tf.gather(y, indices)))

    traced = tf.function(step, autograph=False, experimental_attributes={"_noinline": True})
    step_function = traced.get_concrete_function(data.x_train, data.y_train, tf.TensorSpec([batch], tf.int32))
    first = {id(handle): i for i, handle in enumerate(state_handles(models[0]))}
    positions = [first.get(id(captured)) for captured in step_function.captured_inputs]
    if any(i is None and c.dtype == tf.resource for c, i in zip(step_function.captured_inputs, positions)):
        raise SystemExit("the step captures a variable that `state_handles` does not list")

    def bound(handles):
        captures = [c if i is None else handles[i] for c, i in zip(step_function.captured_inputs, positions)]
        return lambda x, y, indices: step_function._call_flat([x, y, indices], captures)

    return [bound(state_handles(model)) for model in models]


def inlined_steps(models):
    """One step function per model, its own `train_step`, traced into the loop that calls it."""

    def inlined(model):
        return lambda x, y, indices: model.train_step((tf.gather(x, indices), tf.gather(y, indices)))

    return [inlined(model) for model in models]


def together(configs, data, steps_per_epoch, epochs, shared_step=True):
    """What `apart` returns, for all seeds trained at once: every epoch one call, whose loop calls
    each seed's step in turn, `bound_steps` if `shared_step`, else `inlined_steps`."""
    batch = configs[0][1].training.batch_size
    models = [built_model(config, steps_per_epoch, data, seed) for seed, config in configs]
    started = time.perf_counter()
    steps = bound_steps(models, data, batch) if shared_step else inlined_steps(models)
    examples = len(data.splits.y_train)
    full = divisible(examples, batch)

    @tf.function(autograph=False)
    def group_epoch(x, y, orders):
        batches = tf.reshape(orders, (len(models), full, batch))

        def body(i):
            for k, step in enumerate(steps):
                step(x, y, batches[k, i])
            return i + 1

        tf.while_loop(lambda i: i < full - 1, body, [tf.constant(0)])
        return [step(x, y, batches[k, -1]) for k, step in enumerate(steps)]

    results, seconds = [[] for _ in models], []
    for epoch in range(1, epochs + 1):
        for model in models:
            model.reset_metrics()
        orders = np.stack([epoch_order(seed, epoch, examples) for seed, _ in configs]).astype(np.int32)
        outputs = group_epoch(data.x_train, data.y_train, tf.constant(orders))
        for k, (model, output) in enumerate(zip(models, outputs, strict=True)):
            logs = {name: float(value) for name, value in output.items()}
            results[k].append((logs, model.step_log.drain().copy()))
        seconds.append(time.perf_counter() - started)  # the first includes the traces
        started = time.perf_counter()
    return (results, *graph_and_rate(seconds, epochs, len(models) * full))


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
    if arguments.epochs < 2:
        parser.error("--epochs must be ≥ 2: the first epoch holds the graph, the later ones the steady rate")
    experiment = load_experiment(arguments.experiment, [])
    runs = experiment.runs()
    raw_before = raw_steps_per_second(arguments.experiment, [])
    print(f"experiment: {experiment.name} ({len(experiment.variants)} variants, {len(runs)} runs)")
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
            "apart, step out of line": apart(configs, data, steps_per_epoch, arguments.epochs, out_of_line=True),
            f"together ({len(configs)} seeds)": together(configs, data, steps_per_epoch, arguments.epochs),
            "together, traced per seed": together(configs, data, steps_per_epoch, arguments.epochs, shared_step=False),
        }
        runner, out_of_line, *_ = (results for results, _, _ in designs.values())
        for design, (results, graph, rate) in designs.items():
            seconds[design] = seconds.get(design, 0.0) + graph + steps / rate
            same = [same_bits(runner, results), same_bits(out_of_line, results)]
            marks = "  ".join("yes" if equal else "NO" for equal in same)
            print(f"{variant:16s}{design:>25s}{graph:>24.2f} s{rate:>14.0f}   {marks}")
    # This machine's speed drifts over seconds; the faster rate makes the ceilings the lower.
    raw = max(raw_before, raw_steps_per_second(arguments.experiment, []))
    print(f"raw loop {raw:.0f} steps/s (the faster of two measurements, before and after)")
    print(f"ceiling of the sweep efficiency (graphs and steps alone, {total_steps} steps):")
    for design, spent in seconds.items():
        print(f"  {design:25s} {total_steps / raw / spent:.2f}")


if __name__ == "__main__":
    main()
