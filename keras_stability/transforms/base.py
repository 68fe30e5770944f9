"""The gradient-transform protocol and `chain`.

A transform maps `(gradients, variables)` to `(new_gradients, changed)`, where `changed` is a scalar
boolean tensor saying whether the transform altered the gradient this step (it feeds the `clip_rate`
telemetry). Stateful transforms create their state as Keras variables in `build`, so checkpoints and
`model.save` capture it, and update it with plain assignments, so they run eagerly, inside
`tf.function` and under `jit_compile=True`.
"""

from collections.abc import Callable, Iterable, Sequence

import keras
import tensorflow as tf

from keras_stability.transforms import norms
from keras_stability.transforms.norms import Gradient

PACKAGE = "keras_stability"

Gradients = list[Gradient | None]  # one per variable; None passes through
Variables = Sequence[keras.Variable]


class GradientTransform:
    """Base class of every gradient transform.

    Subclasses implement `transform(gradients, variables)`; stateful ones also override `build` and
    `variables`; global-norm ones derive from `GlobalNormTransform` instead. Gradients may be dense
    tensors, `tf.IndexedSlices` or `None` (passed through).
    """

    def __init__(self) -> None:
        self.built = False

    def build(self, variables: Variables) -> None:
        """Creates the transform's state for `variables` (the model's trainable variables)."""
        del variables
        self.built = True

    @property
    def variables(self) -> list[keras.Variable]:
        """The transform's state variables (empty for stateless transforms)."""
        return []

    def __call__(
        self, gradients: Iterable[Gradient | None], variables: Iterable[keras.Variable]
    ) -> tuple[Gradients, tf.Tensor]:
        gradients, variables = self.prepare(gradients, variables)
        new_gradients, changed = self.transform(gradients, variables)
        return list(new_gradients), tf.convert_to_tensor(changed, tf.bool)

    def apply_measured(
        self, gradients: Iterable[Gradient | None], variables: Iterable[keras.Variable], global_norm: tf.Tensor
    ) -> tuple[Gradients, tf.Tensor, tf.Tensor]:
        """`self(gradients, variables)` for a caller that has measured the gradients' global norm.

        Returns `(new_gradients, changed, new_global_norm)`. `StabilizedOptimizer` measures the norm
        for its telemetry anyway; through this, global-norm transforms measure neither norm again.
        """
        gradients, variables = self.prepare(gradients, variables)
        new_gradients, changed, new_norm = self.transform_measured(gradients, variables, global_norm)
        return list(new_gradients), tf.convert_to_tensor(changed, tf.bool), new_norm

    def prepare(
        self, gradients: Iterable[Gradient | None], variables: Iterable[keras.Variable]
    ) -> tuple[Gradients, list[keras.Variable]]:
        """Checks that there is one gradient per variable and builds the transform on first use."""
        gradients = list(gradients)
        variables = list(variables)
        if len(gradients) != len(variables):
            raise ValueError(
                f"{type(self).__name__} needs one gradient per variable. "
                f"Received: {len(gradients)} gradients and {len(variables)} variables."
            )
        if not self.built:
            self.build(variables)
        return gradients, variables

    def transform(self, gradients: Gradients, variables: Variables) -> tuple[Gradients, tf.Tensor]:
        raise NotImplementedError

    def transform_measured(
        self, gradients: Gradients, variables: Variables, global_norm: tf.Tensor
    ) -> tuple[Gradients, tf.Tensor, tf.Tensor]:
        """`transform`, given the input's global norm and also returning the output's (measured)."""
        del global_norm
        new_gradients, changed = self.transform(gradients, variables)
        return new_gradients, changed, norms.global_norm(new_gradients)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "GradientTransform":
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


class GlobalNormTransform(GradientTransform):
    """A transform that rescales all gradients by one factor decided from their global norm.

    Subclasses implement `transform_measured`, returning the input's norm times the factor as the
    output's norm, so neither norm is measured twice.
    """

    def transform(self, gradients: Gradients, variables: Variables) -> tuple[Gradients, tf.Tensor]:
        new_gradients, changed, _ = self.transform_measured(gradients, variables, norms.global_norm(gradients))
        return new_gradients, changed


def map_per_tensor(
    gradients: Gradients, variables: Variables, fn: Callable[[Gradient, keras.Variable], tuple[Gradient, tf.Tensor]]
) -> tuple[Gradients, tf.Tensor]:
    """Applies `fn(gradient, variable) -> (new_gradient, changed)` to each non-`None` gradient.

    Returns the new gradients (`None` kept in place) and whether any tensor changed.
    """
    mapped, changed = [], []
    for g, v in zip(gradients, variables):
        if g is None:
            mapped.append(None)
            continue
        new_g, tensor_changed = fn(g, v)
        mapped.append(new_g)
        changed.append(tf.convert_to_tensor(tensor_changed, tf.bool))
    return mapped, tf.reduce_any(tf.stack(changed)) if changed else tf.constant(False)


def state_variable(
    name: str, shape: tuple[int, ...] = (), dtype: str = "float32", initializer: str = "zeros"
) -> keras.Variable:
    """A non-trainable Keras variable for transform state.

    Transforms run after the cross-replica all-reduce, so every replica computes the same new state;
    `only_first_replica` aggregation lets them assign it from a replica context.
    """
    return keras.Variable(
        initializer=keras.initializers.get(initializer),
        shape=shape,
        dtype=dtype,
        trainable=False,
        aggregation="only_first_replica",
        name=name,
    )


@keras.saving.register_keras_serializable(package=PACKAGE)
class Chain(GradientTransform):
    """Applies transforms one after another; the gradient counts as changed if any step changed it."""

    def __init__(self, transforms: Iterable[GradientTransform]) -> None:
        super().__init__()
        transforms = list(transforms)
        for position, item in enumerate(transforms):
            if not isinstance(item, GradientTransform):
                raise TypeError(
                    "chain() takes gradient transforms such as clip_by_global_norm(1.0). "
                    f"Received: {item!r} (type {type(item).__name__}) at position {position}."
                )
        self.transforms = transforms

    def build(self, variables: Variables) -> None:
        for item in self.transforms:
            item.build(variables)
        self.built = True

    @property
    def variables(self) -> list[keras.Variable]:
        return [v for item in self.transforms for v in item.variables]

    def transform(self, gradients: Gradients, variables: Variables) -> tuple[Gradients, tf.Tensor]:
        changed = tf.constant(False)
        for item in self.transforms:
            gradients, item_changed = item(gradients, variables)
            changed = tf.logical_or(changed, item_changed)
        return gradients, changed

    def transform_measured(
        self, gradients: Gradients, variables: Variables, global_norm: tf.Tensor
    ) -> tuple[Gradients, tf.Tensor, tf.Tensor]:
        changed = tf.constant(False)
        for item in self.transforms:
            gradients, item_changed, global_norm = item.apply_measured(gradients, variables, global_norm)
            changed = tf.logical_or(changed, item_changed)
        return gradients, changed, global_norm

    def get_config(self) -> dict:
        return {"transforms": [keras.saving.serialize_keras_object(t) for t in self.transforms]}

    @classmethod
    def from_config(cls, config: dict) -> "GradientTransform":
        return cls([keras.saving.deserialize_keras_object(t) for t in config["transforms"]])

    def __repr__(self) -> str:
        return f"chain({', '.join(repr(t) for t in self.transforms)})"


def chain(*transforms: GradientTransform) -> Chain:
    """Composes transforms left to right: `chain(adaptive_clip(), clip_by_global_norm(1.0))`.

    Raises:
        ValueError: if no transform is given.
        TypeError: if an argument is not a `GradientTransform` (a list must be unpacked: `chain(*ts)`).
    """
    if not transforms:
        raise ValueError("chain() needs at least one transform. Received: nothing.")
    return Chain(transforms)


def check_transform(transform: GradientTransform | None) -> GradientTransform | None:
    """Accepts a `GradientTransform` or `None`; anything else is a TypeError naming what was received."""
    if transform is not None and not isinstance(transform, GradientTransform):
        raise TypeError(
            "`transform` must be a keras_stability transform such as clip_by_global_norm(1.0), "
            f"or None. Received: transform={transform!r}."
        )
    return transform


def serialize(transform: GradientTransform | None) -> dict | None:
    """A transform's Keras config (`None` stays `None`, meaning "no transform")."""
    return None if transform is None else keras.saving.serialize_keras_object(transform)


def deserialize(config: dict | None) -> GradientTransform | None:
    """The transform that `serialize` described (`None` stays `None`)."""
    if config is None:
        return None
    transform = keras.saving.deserialize_keras_object(config)
    if not isinstance(transform, GradientTransform):
        raise TypeError(f"Expected a serialized gradient transform. Received: {config!r}.")
    return transform
