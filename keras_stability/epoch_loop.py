"""`train_epoch`: one epoch over in-memory arrays as one graph execution, without `tf.data`.

Keras `fit` pulls every batch from a `tf.data` iterator. On a CPU that costs about 0.5 ms per step
(an asynchronous `IteratorGetNext` and a thread hand-off), which is 40 % of a small MLP's step, and
the hand-off decides at random whether the epoch's kernels run on one core or on all of them
(oneDNN goes single-threaded when called from a thread of TensorFlow's intra-op pool). Here the
arrays stay device tensors and each step gathers its batch by index inside a `tf.while_loop`, which
calls the model's own `train_step`, so every metric, loss scaling and telemetry of `fit` apply.
"""

import logging
import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_stability.nonfinite import nonfinite_errors

_EPOCH_FUNCTIONS = weakref.WeakKeyDictionary()


class ExpectedTracing(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls to <function> triggered tf.function retracing"
    warning for the functions a model gets one of (`epoch_function`, `evaluation_function`).

    Each model traces its own function once, as `fit` traces its own train function. TensorFlow's
    detector counts traces per Python code object, across every function object made from it, so a
    search or suite that builds a model per trial reads as retracing when nothing is traced twice.
    Retracing of any other function is still reported."""

    NAMES = ("epoch_function.<locals>.epoch", "evaluation_function.<locals>.evaluate")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "triggered tf.function retracing" not in message or not any(name in message for name in self.NAMES)


tf.get_logger().addFilter(ExpectedTracing())


def train_epoch(model: keras.Model, x: Any, y: Any, order: Any, batch_size: int) -> dict[str, float]:
    """Runs `model.train_step` on the batches `x[order[i:i + batch_size]]`; returns the last logs.

    Args:
        model: a compiled `keras.Model` (a `StabilizedModel` or any other) on the default strategy.
        x, y: the training inputs and targets; pass tensors to keep them on the device between epochs.
        order: a permutation (or any index vector) of the examples; its batches are taken in order,
            the last one smaller when `batch_size` does not divide it, as `fit` does.
        batch_size: examples per step.

    Metrics are reset first, so the logs are the epoch's, as `fit`'s history reports them. The
    model's `jit_compile` applies to each step, as in `fit`; with `run_eagerly` every step runs eagerly.
    """
    if not getattr(model, "compiled", False):
        raise ValueError(f"train_epoch needs a compiled model: call model.compile(...) first. Received: {model!r}.")
    if model.distribute_strategy.num_replicas_in_sync > 1:
        raise ValueError(
            "train_epoch runs on one device; a model built under a distribution strategy trains with "
            f"model.fit. Received: a model on {model.distribute_strategy.num_replicas_in_sync} replicas."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer ≥ 1. Received: batch_size={batch_size!r}.")
    # Tensors, so that the traced epoch takes them as inputs instead of embedding numpy constants.
    x, y, order = tf.convert_to_tensor(x), tf.convert_to_tensor(y), tf.convert_to_tensor(order, tf.int32)
    if order.shape.rank != 1 or order.shape[0] == 0:
        raise ValueError(f"`order` must be a non-empty vector of example indices. Received: shape {order.shape}.")
    first = order[:batch_size]
    # What `fit` does before its first step: create the model's, metrics' and optimizer's variables
    # outside the loop (variables cannot be created inside a tf.while_loop).
    model._maybe_symbolic_build(data_batch=(tf.gather(x, first), tf.gather(y, first), None))
    # `compile` makes a new loss tracker (and optimizer, loss, metrics) that a traced epoch would
    # not see: recompiling starts a new cache, as `compile` resets `fit`'s train_function.
    compiled, functions = _EPOCH_FUNCTIONS.get(model, (None, {}))
    if compiled is not model._loss_tracker:
        functions = {}
        _EPOCH_FUNCTIONS[model] = (model._loss_tracker, functions)
    key = (batch_size, model.jit_compile, model.run_eagerly)
    if key not in functions:
        functions[key] = epoch_function(weakref.ref(model), *key)
    model.reset_metrics()
    with nonfinite_errors():
        logs = functions[key](x, y, order)
    return {name: float(value) for name, value in logs.items()}


def epoch_function(model_ref: weakref.ref, batch_size: int, jit_compile: bool, run_eagerly: bool) -> Callable:
    """The epoch of one model and batch size, compiled unless `run_eagerly`; it is retraced only for
    a new number of examples, and holds the model weakly so that the cache does not keep it alive."""

    # As Keras's trainer calls `train_step`: without AutoGraph, whose conversion of the step (the
    # model, the optimizer and its transform) took three quarters of the epoch's trace time. Their
    # control flow on tensors is written as `tf.cond`/`ops.cond`, as Keras's own is.
    @tf.autograph.experimental.do_not_convert
    def step(x, y, batch):
        return model_ref().train_step((tf.gather(x, batch), tf.gather(y, batch)))

    if jit_compile and not run_eagerly:
        # XLA compiles the step, as Keras does: with the whole loop compiled, XLA's CPU backend ran
        # doc 000's CNN at 1 step/s instead of 17.
        step = tf.function(step, jit_compile=True)

    def epoch(x, y, order):
        full, rest = divmod(order.shape[0], batch_size)
        batches = tf.reshape(order[: full * batch_size], (full, batch_size))
        # The last step runs after the loop, so only its logs are computed and returned; the
        # remainder batch is a step of its own, so every shape is static.
        for i in tf.range(full if rest else full - 1):
            step(x, y, batches[i])
        return step(x, y, order[full * batch_size :] if rest else batches[-1])

    return epoch if run_eagerly else tf.function(epoch)
