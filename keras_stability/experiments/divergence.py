"""When a run has diverged: the suite's rule, a pure function of one epoch's numbers."""

import math
from collections.abc import Iterable, Sequence


def first_divergent_step(
    step_rows: Iterable[Sequence[float]], train_loss: float, val_loss: float, applies_nonfinite: bool
) -> int | None:
    """The 1-based position, within an epoch, of the step at which the run diverged; None if it did not.

    A step diverges when its loss is not finite, or, when non-finite gradients are applied
    (`applies_nonfinite`, the "propagate" policy), when its gradient norm is not finite: such a step
    puts NaN or inf into the weights, and the loss can stay finite after it (oneDNN's ReLU maps NaN to
    0). An epoch whose steps all look finite but whose train or validation loss is not diverged at
    its last step.

    Args:
        step_rows: the epoch's (loss, grad_norm, clipped_norm) rows, in step order.
        train_loss, val_loss: the epoch's mean training loss and validation loss.
        applies_nonfinite: whether a non-finite gradient reaches the weights.
    """
    for position, (loss, grad_norm, *_) in enumerate(step_rows, start=1):
        if not math.isfinite(loss) or (applies_nonfinite and not math.isfinite(grad_norm)):
            return position
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        return len(step_rows)
    return None
