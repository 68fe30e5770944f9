"""Norms and finiteness checks that treat sparse gradients as the dense tensors they stand for.

`tf.IndexedSlices` gradients (from `Embedding` or `tf.gather`) may repeat an index; the dense gradient
is the *sum* of the rows that share an index. `tf.norm(slices.values)` and therefore `tf.clip_by_norm`
and `tf.clip_by_global_norm` measure the rows separately and get the norm wrong. Every norm in this
package goes through `deduplicate` first.
"""

from collections.abc import Iterable

import tensorflow as tf

Gradient = tf.Tensor | tf.IndexedSlices  # a dense gradient, or a sparse one (Embedding, tf.gather)


def deduplicate(gradient: Gradient) -> Gradient:
    """Returns `gradient` with repeated `IndexedSlices` indices summed into one row each."""
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    unique_indices, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(unique_indices)[0])
    return tf.IndexedSlices(values, unique_indices, gradient.dense_shape)


def values_of(gradient: Gradient) -> tf.Tensor:
    """The stored values of a dense tensor or of (deduplicated) `IndexedSlices`."""
    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def with_values(gradient: Gradient, values: tf.Tensor) -> Gradient:
    """A gradient shaped like `gradient` holding `values`."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(values, gradient.indices, gradient.dense_shape)
    return values


def scale(gradient: Gradient | None, factor: tf.Tensor | float) -> Gradient | None:
    """`gradient * factor` for dense and sparse gradients; `None` stays `None`."""
    if gradient is None:
        return None
    values = values_of(gradient)
    return with_values(gradient, values * tf.cast(factor, values.dtype))


def squared_norm(gradient: Gradient) -> tf.Tensor:
    """Sum of squares of the dense gradient, in float32 whatever the gradient's dtype."""
    values = tf.cast(values_of(deduplicate(gradient)), tf.float32)
    return tf.reduce_sum(tf.square(values))


def tensor_norm(gradient: Gradient) -> tf.Tensor:
    """L2 norm of one gradient as a dense tensor."""
    return tf.sqrt(squared_norm(gradient))


def global_norm(gradients: Iterable[Gradient | None]) -> tf.Tensor:
    """sqrt(Σ‖g‖²) over all non-`None` gradients, each taken as its dense tensor."""
    squares = [squared_norm(g) for g in gradients if g is not None]
    if not squares:
        return tf.constant(0.0, tf.float32)
    return tf.sqrt(tf.add_n(squares))
