"""When a run has diverged: the suite's one rule, a pure function of the numbers a run records.

The rule is the same for every arm, whatever its non-finite policy: a "skip" arm that drops every
step after a blow-up has diverged as surely as a "propagate" arm whose weights turned to NaN. It is
checked at two grains. Within an epoch, a step diverges when its loss is not finite, or, when
non-finite gradients are applied (`applies_nonfinite`, the "propagate" policy), when its gradient
norm is not finite: such a step puts NaN or inf into the weights, and the loss can stay finite after
it (oneDNN's ReLU maps NaN to 0). At the end of an epoch, the run has diverged at the epoch's last
step when its training or validation loss is not finite or above `LOSS_GROWTH` times the run's
first-step loss, or when more than `NONFINITE_SHARE` of its steps so far had a non-finite gradient
(skipped or zeroed by the policy).
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# A loss ten times the untrained model's is a blow-up: for ten-class cross-entropy, from ln 10 ≈ 2.3
# to 23 nats, predictions confidently wrong on average (a stated bound, not a fitted one).
LOSS_GROWTH = 10.0
# More than one step in ten with a non-finite gradient is a run kept alive only by its policy.
NONFINITE_SHARE = 0.1
RULE = (
    "a run diverges at the first step whose loss is not finite or whose non-finite gradient reaches the "
    "weights, or at the end of the first epoch whose training or validation loss is not finite or more than "
    f"{LOSS_GROWTH:g}× the run's first-step loss, or by which more than {NONFINITE_SHARE:.0%} of its steps "
    "had a non-finite gradient (skipped or zeroed); the same rule for every arm, whatever its non-finite policy"
)


@dataclass(frozen=True)
class EpochEnd:
    """What the rule reads at the end of an epoch.

    Attributes:
        train_loss, val_loss: the epoch's mean training loss and its validation loss.
        nonfinite_steps: steps with a non-finite gradient since the run started (metrics.csv's
            cumulative `nonfinite_steps`).
        steps_done: steps trained since the run started, this epoch's included.
    """

    train_loss: float
    val_loss: float
    nonfinite_steps: float
    steps_done: int


def epoch_diverges(end: EpochEnd, start_loss: float) -> bool:
    """Whether the run has diverged by the end of an epoch (`start_loss`: its first step's loss).

    >>> epoch_diverges(EpochEnd(2.6e22, 3.1e22, 70, 81), start_loss=2.3)
    True
    >>> epoch_diverges(EpochEnd(0.4, 0.5, 8, 81), start_loss=2.3)
    False
    """
    if not (math.isfinite(end.train_loss) and math.isfinite(end.val_loss)):
        return True
    if start_loss > 0 and max(end.train_loss, end.val_loss) > LOSS_GROWTH * start_loss:
        return True
    return end.nonfinite_steps > NONFINITE_SHARE * end.steps_done


def first_divergent_step(
    step_rows: Sequence[Sequence[float]], end: EpochEnd, start_loss: float, applies_nonfinite: bool
) -> int | None:
    """The 1-based position, within an epoch, of the step at which the run diverged; None if it did not.

    Args:
        step_rows: the epoch's (loss, grad_norm, clipped_norm) rows, in step order.
        end: the epoch's losses and the run's non-finite count (`EpochEnd`).
        start_loss: the run's first step's loss (the first row of its first epoch).
        applies_nonfinite: whether a non-finite gradient reaches the weights.

    Returns:
        The step's position, or None.
    """
    for position, (loss, grad_norm, *_) in enumerate(step_rows, start=1):
        if not math.isfinite(loss) or (applies_nonfinite and not math.isfinite(grad_norm)):
            return position
    return len(step_rows) if epoch_diverges(end, start_loss) else None


def divergence_step(recorded_step: int | None, ends: Iterable[EpochEnd], start_loss: float) -> int | None:
    """The step a finished run diverged at under the rule: the step its runner recorded (the
    within-epoch part, or an earlier rule's), else the last step of the first epoch the epoch-end part
    flags. A report applies it to runs trained before the rule, whose runner may have gone on."""
    if recorded_step is not None:
        return recorded_step
    return next((end.steps_done for end in ends if epoch_diverges(end, start_loss)), None)
