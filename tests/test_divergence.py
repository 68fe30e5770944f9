"""The divergence rule on hand-written epochs: which step, if any, a run diverged at."""

import math

import pytest

from keras_stability.experiments.divergence import first_divergent_step

NAN, INF = math.nan, math.inf
FINE = [(2.3, 1.0, 1.0), (2.1, 0.9, 0.9), (1.9, 0.8, 0.8)]


@pytest.mark.parametrize(
    "rows, train_loss, val_loss, applies_nonfinite, expected",
    [
        (FINE, 2.1, 2.0, True, None),  # nothing wrong
        ([FINE[0], (NAN, 0.9, 0.9), FINE[2]], NAN, 2.0, False, 2),  # the first non-finite loss
        ([FINE[0], (INF, 0.9, 0.9), (NAN, NAN, NAN)], NAN, NAN, True, 2),  # inf counts, the first one wins
        # A NaN gradient that was applied: divergence even though every loss stays finite (oneDNN's
        # ReLU maps NaN weights' activations to 0).
        ([FINE[0], (2.1, NAN, NAN), (2.3, 0.0, 0.0)], 2.2, 2.3, True, 2),
        ([FINE[0], (2.1, INF, 1.0), FINE[2]], 2.2, 2.3, True, 2),
        # The same steps under skip / zero / raise: the gradient never reached the weights.
        ([FINE[0], (2.1, NAN, NAN), (2.3, 0.0, 0.0)], 2.2, 2.3, False, None),
        # Finite steps, non-finite epoch loss (an overflow in the mean): the epoch's last step.
        (FINE, INF, 2.0, False, 3),
        (FINE, 2.1, NAN, True, 3),
        ([], 2.1, NAN, True, 0),  # no step rows logged: the epoch itself
    ],
    ids=[
        "finite",
        "nan-loss",
        "inf-loss-first",
        "applied-nan-gradient",
        "applied-inf-gradient",
        "skipped-nan-gradient",
        "train-loss-overflow",
        "val-loss-nan",
        "no-steps",
    ],
)
def test_first_divergent_step(rows, train_loss, val_loss, applies_nonfinite, expected):
    assert first_divergent_step(rows, train_loss, val_loss, applies_nonfinite) == expected


def test_the_clipped_norm_does_not_decide():
    # A transform may report any clipped norm; the rule reads the loss and the raw gradient norm.
    assert first_divergent_step([(2.0, 1.0, NAN)], 2.0, 2.0, True) is None
