"""`evaluate_arrays`: Keras `evaluate` over device tensors as one graph execution.

`model.evaluate` builds a `tf.data` pipeline from the arrays at every call and pulls each batch
through an iterator. Here the batches are slices of device tensors inside one `tf.function`, traced
once for any number of examples, that calls the model's own `test_step` batch after batch, so the
metrics are those `evaluate` reports, summed in its order.
"""

import weakref

import keras
import tensorflow as tf

_FUNCTIONS = weakref.WeakKeyDictionary()


def evaluate_arrays(model: keras.Model, x, y, batch_size: int) -> dict[str, float]:
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
    key = (batch_size, model.jit_compile, model.run_eagerly, x.shape[1:], y.shape[1:], x.dtype, y.dtype)
    if key not in functions:
        functions[key] = evaluation_function(
            weakref.ref(model),
            batch_size,
            model.jit_compile,
            model.run_eagerly,
            signature=[any_length(x), any_length(y)],
        )
    model.reset_metrics()
    logs = functions[key](x, y)
    return {name: float(value) for name, value in logs.items()}


def any_length(tensor):
    return tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype)


def evaluation_function(model_ref, batch_size, jit_compile, run_eagerly, signature):
    """The evaluation of one model and batch size, traced once for any number of examples of the
    `signature` (validation and test sets share it)."""

    # Keras's own steps run without AutoGraph (they hold no Python control flow on tensors);
    # converting them took about half of the trace time.
    @tf.autograph.experimental.do_not_convert
    def step(x, y):
        return model_ref().test_step((x, y))

    if jit_compile and not run_eagerly:
        step = tf.function(step, jit_compile=True)  # as Keras compiles its test step

    def evaluate(x, y):
        examples = tf.shape(x)[0]
        full = examples // batch_size
        # Full batches as a leading axis, so that each step sees a static batch shape.
        x_batches = tf.reshape(x[: full * batch_size], tf.concat([[full, batch_size], tf.shape(x)[1:]], 0))
        y_batches = tf.reshape(y[: full * batch_size], tf.concat([[full, batch_size], tf.shape(y)[1:]], 0))
        x_batches.set_shape([None, batch_size, *x.shape[1:]])
        y_batches.set_shape([None, batch_size, *y.shape[1:]])
        for i in tf.range(full):
            step(x_batches[i], y_batches[i])
        if examples > full * batch_size:
            step(x[full * batch_size :], y[full * batch_size :])
        return model_ref().get_metrics_result()

    return evaluate if run_eagerly else tf.function(evaluate, input_signature=signature)
