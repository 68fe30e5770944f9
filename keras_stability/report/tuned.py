"""The tuned comparison: each variant at its own best learning rate, chosen on validation accuracy.

One hand-picked learning rate favours whichever variant happens to suit it (Choi et al. 2019, "On
Empirical Comparisons of Optimizers for Deep Learning"), and clipping also shrinks the step, so equal
nominal learning rates are not equal steps (Zhang et al. 2020): each arm is compared at its own tuned
rate. Every sweep group (runs that differ only in `optimizer.learning_rate`) is tuned on the mean
best validation accuracy (a diverged run scores 0) of its selection seeds — the first half of its
seeds, in order — and compared on the test accuracy of its other seeds at that learning rate: the
seeds that chose the rate do not also report it.
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
    selection_seeds: tuple[int, ...] = ()
    test_seeds: tuple[int, ...] = ()


def split_seeds(seeds) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(selection, test): the first half of the sorted seeds (at least one) chooses, the rest test.

    >>> split_seeds(range(11))
    ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9, 10))
    """
    ordered = tuple(sorted(set(seeds)))
    cut = max(1, len(ordered) // 2)
    return ordered[:cut], ordered[cut:]


def tune(group: SweepGroup) -> Tuned:
    """The learning rate with the highest mean validation accuracy of the selection seeds (ties: fewer
    diverged, then smaller), and the test accuracies of the other seeds there."""
    selection, fresh = split_seeds(o.seed for o in group.outcomes)
    settings = []
    for learning_rate in group.values(LEARNING_RATE):
        runs = [o for o in group.at(LEARNING_RATE, learning_rate) if o.seed in selection]
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
    chosen = sorted(group.at(LEARNING_RATE, best.learning_rate), key=lambda o: o.seed)
    tests = tuple(o.test_accuracy for o in chosen if o.seed in fresh)
    return Tuned(group.label, group.variants, best.learning_rate, tests, tuple(settings), selection, fresh)


def tuned_comparison(variant: Tuned, baseline: Tuned) -> Comparison:
    """Test accuracy of `variant`'s fresh seeds at its best learning rate against `baseline`'s at its own."""
    return compare_means(variant.test_accuracies, baseline.test_accuracies)
