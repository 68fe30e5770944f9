"""The tuned comparison: each variant at its own best learning rate, chosen on validation accuracy.

One hand-picked learning rate favours whichever variant happens to suit it. Here every sweep group
(runs that differ only in `optimizer.learning_rate`) is tuned on its mean best validation accuracy
(a diverged run scores 0), and compared on test accuracy over the seeds at that learning rate — so
"X trains better" is judged against the tuned baseline, on data the choice did not see.
"""

from dataclasses import dataclass

import numpy as np

from keras_stability.report.outcomes import LEARNING_RATE, SweepGroup
from keras_stability.report.statistics import Comparison, compare_means


@dataclass(frozen=True)
class Setting:
    """One learning rate of a group: its mean best validation and test accuracy, over `runs` seeds."""

    learning_rate: float
    runs: int
    diverged: int
    val_accuracy: float
    test_accuracy: float


@dataclass(frozen=True)
class Tuned:
    """A group at its best learning rate: the test accuracies of its seeds there, and every setting tried."""

    label: str
    variants: tuple[str, ...]
    best_lr: float
    test_accuracies: tuple[float, ...]
    settings: tuple[Setting, ...]


def tune(group: SweepGroup) -> Tuned:
    """The learning rate with the highest mean validation accuracy (ties: fewer diverged, then smaller)."""
    settings = []
    for learning_rate in group.values(LEARNING_RATE):
        runs = group.at(LEARNING_RATE, learning_rate)
        settings.append(
            Setting(
                float(learning_rate),
                len(runs),
                sum(o.diverged for o in runs),
                float(np.mean([o.best_val_accuracy for o in runs])),
                float(np.mean([o.test_accuracy for o in runs])),
            )
        )
    best = max(settings, key=lambda s: (s.val_accuracy, -s.diverged, -s.learning_rate))
    tests = tuple(o.test_accuracy for o in sorted(group.at(LEARNING_RATE, best.learning_rate), key=lambda o: o.seed))
    return Tuned(group.label, group.variants, best.learning_rate, tests, tuple(settings))


def tuned_comparison(variant: Tuned, baseline: Tuned) -> Comparison:
    """Test accuracy of `variant` at its best learning rate against `baseline` at its own."""
    return compare_means(variant.test_accuracies, baseline.test_accuracies)
