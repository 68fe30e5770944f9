"""A run's sharpness telemetry (`training.sharpness`), written to sharpness.csv (`runs.sharpness_log`).

A measurement reads the weights and changes nothing: a run's other files are the same with it or
without it (tests/experiments/test_curvature.py).
"""

import math

import keras

from keras_stability.sharpness import adam_preconditioner, is_adam, stability_limit, top_hessian_eigenvalue


def measure(model: keras.Model, x, y, settings) -> tuple[float, float]:
    """(sharpness, the optimizer's stability limit) at the current weights and learning rate.

    The limit is NaN for optimizers `stability_limit` has no formula for (Adagrad, RMSprop)."""
    optimizer = model.optimizer
    preconditioner = adam_preconditioner(optimizer, model.trainable_variables) if is_adam(optimizer) else None
    examples = settings.examples
    sharpness = top_hessian_eigenvalue(
        model, x[:examples], y[:examples], preconditioner=preconditioner, iterations=settings.iterations
    )
    try:
        limit = float(stability_limit(optimizer))
    except ValueError:
        limit = math.nan
    return float(sharpness), limit


def due(settings, epoch: int) -> bool:
    """Whether the run measures after `epoch` (epoch 0: before training)."""
    return settings is not None and epoch % settings.every_epochs == 0
