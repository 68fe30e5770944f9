"""The divergence rule on hand-written epochs: which step, if any, a run diverged at."""

import math

import pytest

from keras_stability.runs.divergence import (
    LOSS_GROWTH,
    NONFINITE_SHARE,
    EpochEnd,
    divergence_step,
    epoch_diverges,
    first_divergent_step,
)

NAN, INF = math.nan, math.inf
FINE = [(2.3, 1.0, 1.0), (2.1, 0.9, 0.9), (1.9, 0.8, 0.8)]
START = 2.3


def end(train_loss=2.1, val_loss=2.0, nonfinite_steps=0, steps_done=3):
    return EpochEnd(train_loss, val_loss, nonfinite_steps, steps_done)


@pytest.mark.parametrize(
    "rows, epoch_end, applies_nonfinite, expected",
    [
        (FINE, end(), True, None),  # nothing wrong
        ([FINE[0], (NAN, 0.9, 0.9), FINE[2]], end(train_loss=NAN), False, 2),  # the first non-finite loss
        ([FINE[0], (INF, 0.9, 0.9), (NAN, NAN, NAN)], end(NAN, NAN), True, 2),  # inf counts, the first one wins
        # A NaN gradient that was applied: divergence even though every loss stays finite (oneDNN's
        # ReLU maps NaN weights' activations to 0).
        ([FINE[0], (2.1, NAN, NAN), (2.3, 0.0, 0.0)], end(2.2, 2.3), True, 2),
        ([FINE[0], (2.1, INF, 1.0), FINE[2]], end(2.2, 2.3), True, 2),
        # The same steps under skip / zero: one skipped step in three is past the share.
        ([FINE[0], (2.1, NAN, NAN), (2.3, 0.0, 0.0)], end(2.2, 2.3, nonfinite_steps=1), False, 3),
        # ... and one in ten is not.
        ([FINE[0], (2.1, NAN, NAN), (2.3, 0.0, 0.0)], end(2.2, 2.3, nonfinite_steps=1, steps_done=10), False, None),
        # Finite steps, non-finite epoch loss (an overflow in the mean): the epoch's last step.
        (FINE, end(train_loss=INF), False, 3),
        (FINE, end(val_loss=NAN), True, 3),
        ([], end(val_loss=NAN, steps_done=0), True, 0),  # no step rows logged: the epoch itself
        # A finite loss far above the start: the skip arm of issue 24 (train loss 2.6e22 after 70 skips).
        (FINE, end(train_loss=2.6e22, val_loss=3.1e22), False, 3),
        (FINE, end(train_loss=LOSS_GROWTH * START * 1.01), False, 3),
        (FINE, end(train_loss=LOSS_GROWTH * START * 0.99), False, None),
    ],
    ids=[
        "finite",
        "nan-loss",
        "inf-loss-first",
        "applied-nan-gradient",
        "applied-inf-gradient",
        "skipped-share-over",
        "skipped-share-under",
        "train-loss-overflow",
        "val-loss-nan",
        "no-steps",
        "finite-blow-up",
        "just-over-growth",
        "just-under-growth",
    ],
)
def test_first_divergent_step(rows, epoch_end, applies_nonfinite, expected):
    assert first_divergent_step(rows, epoch_end, START, applies_nonfinite) == expected


def test_the_clipped_norm_does_not_decide():
    # A transform may report any clipped norm; the rule reads the loss and the raw gradient norm.
    assert first_divergent_step([(2.0, 1.0, NAN)], end(2.0, 2.0, steps_done=1), 2.0, True) is None


def test_the_share_is_of_all_steps_so_far():
    # 8 of 81 steps is under 10 %; 9 of 81 is over (9 > 8.1); 9 of 162 is under again.
    assert NONFINITE_SHARE == 0.1
    assert not epoch_diverges(end(nonfinite_steps=8, steps_done=81), START)
    assert epoch_diverges(end(nonfinite_steps=9, steps_done=81), START)
    assert not epoch_diverges(end(nonfinite_steps=9, steps_done=162), START)


def test_a_start_loss_of_zero_sets_no_growth_bound():
    assert not epoch_diverges(end(train_loss=1e6, val_loss=1e6), 0.0)


def test_divergence_step_of_a_recorded_run():
    ends = [end(2.0, 2.0, 0, 81), end(30.0, 2.0, 0, 162), end(NAN, NAN, 0, 243)]
    assert divergence_step(None, ends, START) == 162  # the first flagged epoch's last step
    assert divergence_step(17, ends, START) == 17  # the runner's own step wins
    assert divergence_step(None, ends[:1], START) is None
