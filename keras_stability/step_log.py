"""`StepLog`: per-step loss and gradient norms kept on the device, read once per epoch."""

import numpy as np
import tensorflow as tf

STEP_FIELDS = ("loss", "grad_norm", "clipped_norm")


class StepLog:
    """A fixed-capacity buffer of (loss, grad_norm, clipped_norm) rows written by `train_step`.

    Writing costs two small in-place variable updates per step and no host sync; `drain()` copies
    the rows to the host (once per epoch, say) and empties the buffer. It is a plain object, not a
    Keras layer, so it stays out of `model.weights` and saved models. Rows past `capacity` overwrite
    the oldest ones.
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"StepLog capacity must be an integer ≥ 1. Received: capacity={capacity!r}.")
        self.capacity = capacity
        # tf.Variables, not Keras ones: a row is written in place (`scatter_update`), which
        # Keras variables do not offer; an assignment of the whole buffer cost 5 % of an MLP step.
        self.rows = tf.Variable(
            np.zeros((capacity, len(STEP_FIELDS)), np.float32),
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            name="step_log_rows",
        )
        self.count = tf.Variable(
            0,
            dtype=tf.int32,
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            name="step_log_count",
        )

    def write(self, loss: tf.Tensor, grad_norm: tf.Tensor, clipped_norm: tf.Tensor) -> None:
        """Records one step; every argument must already be identical on all replicas."""
        row = tf.stack([tf.cast(loss, tf.float32), grad_norm, clipped_norm])
        slot = tf.math.floormod(self.count, self.capacity)
        self.rows.scatter_update(tf.IndexedSlices(row[None, :], slot[None]))
        self.count.assign_add(1)

    def drain(self) -> np.ndarray:
        """The rows written since the last drain, oldest first, as a (n, 3) numpy array."""
        count = int(self.count.numpy())
        rows = self.rows.numpy()
        if count > self.capacity:
            start = count % self.capacity
            rows = np.concatenate([rows[start:], rows[:start]])
        else:
            rows = rows[:count]
        self.count.assign(0)
        return rows
