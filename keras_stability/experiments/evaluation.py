"""`evaluate_arrays`: Keras `evaluate` over device tensors as one graph execution.

`model.evaluate` builds a `tf.data` pipeline from the arrays at every call (about 40 ms for the
runner's 900 validation digits, more than the MLP's evaluation itself) and pulls each batch through
an iterator. Here each batch is gathered by position inside one `tf.function` that calls the model's
own `test_step` batch after batch, so the metrics are those `evaluate` reports, summed in its order.
"""

import weakref

import tensorflow as tf

_FUNCTIONS = weakref.WeakKeyDictionary()


def evaluate_arrays(model, x, y, batch_size):
    """`model.evaluate(x, y, batch_size=batch_size, return_dict=True)` for a model on one device.

    Args:
        model: a compiled Keras model on the default strategy (the runner's `StabilizedModel`).
        x, y: inputs and targets; tensors stay on the device between calls.
        batch_size: examples per batch; the last batch is smaller when it does not divide the data.

    Returns:
        {metric name: float}, e.g. {"loss": ..., "accuracy": ...}.
    """
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    functions = _FUNCTIONS.setdefault(model, {})
    key = (batch_size, model.jit_compile, model.run_eagerly)
    if key not in functions:
        functions[key] = evaluation_function(weakref.ref(model), *key)
    model.reset_metrics()
    logs = functions[key](x, y)
    return {name: float(value) for name, value in logs.items()}


def evaluation_function(model_ref, batch_size, jit_compile, run_eagerly):
    """The evaluation of one model and batch size; retraced only for a new number of examples."""

    def step(x, y):
        return model_ref().test_step((x, y))

    if jit_compile and not run_eagerly:
        step = tf.function(step, jit_compile=True)  # as Keras compiles its test step

    def evaluate(x, y):
        full, rest = divmod(x.shape[0], batch_size)
        # Batches as a leading axis, so every step sees a static shape; the last batch runs after
        # the loop, so only its logs (the metrics over all batches) are returned.
        x_batches = tf.reshape(x[: full * batch_size], (full, batch_size, *x.shape[1:]))
        y_batches = tf.reshape(y[: full * batch_size], (full, batch_size, *y.shape[1:]))
        for i in tf.range(full if rest else full - 1):
            step(x_batches[i], y_batches[i])
        if rest:
            return step(x[full * batch_size :], y[full * batch_size :])
        return step(x_batches[-1], y_batches[-1])

    return evaluate if run_eagerly else tf.function(evaluate)
