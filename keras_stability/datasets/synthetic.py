"""The generated datasets: the adding problem and Zipf-distributed token sequences."""

import numpy as np

SPLIT_SEED = 20130216  # fixed: every run seed sees the same split, only the training order differs


def adding_problem(length, samples, rng, task="hochreiter"):
    """Inputs (samples, length, 2): a value in [0, 1] and a marker, and one target per sequence.

    `task` "hochreiter" (Hochreiter & Schmidhuber 1997): one value marked in each half of the
    sequence, the target their sum. "pascanu" (Pascanu et al. 2013's code, `addition.py`): the first
    marker within the first 10 % of the sequence, the second within the next 40 %, so the second is
    at least half the sequence from its end; the target the mean of the two values.

    >>> x, y = adding_problem(50, 1000, np.random.default_rng(0), "pascanu")
    >>> first, second = np.nonzero(x[:, :, 1])[1].reshape(-1, 2).T
    >>> int(first.min()), int(first.max()), int(second.min()), int(second.max())
    (0, 4, 5, 24)
    >>> bool(np.allclose(y[:, 0], x[:, :, 0][x[:, :, 1] == 1].reshape(-1, 2).mean(axis=1)))
    True
    """
    values = rng.uniform(0.0, 1.0, (samples, length)).astype(np.float32)
    markers = np.zeros((samples, length), np.float32)
    if task == "pascanu":
        tenth = max(1, int(length * 0.1))
        first = rng.integers(0, tenth, samples)
        second = rng.integers(0, max(1, int(length * 0.4)), samples) + tenth
    else:  # the draws of every run before `task` existed, unchanged
        first = rng.integers(0, length // 2, samples)
        second = rng.integers(length // 2, length, samples)
    rows = np.arange(samples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    if task == "pascanu":
        targets = targets / 2.0
    return np.stack([values, markers], axis=-1), targets[:, None].astype(np.float32)


def zipf_tokens(vocabulary, length, samples, exponent, rng):
    """Token-id sequences (samples, length) with P(id k) ∝ (k + 1)^-exponent, so frequent ids repeat
    within a sequence, and labels: whether the sum of the ids' ±1 signs exceeds its median over the
    samples (about half the labels are 1). The signs are fixed (SPLIT_SEED): every seed poses one task."""
    weights = np.arange(1, vocabulary + 1, dtype=np.float64) ** -exponent
    ids = rng.choice(vocabulary, size=(samples, length), p=weights / weights.sum()).astype(np.int32)
    signs = np.random.default_rng(SPLIT_SEED).choice([-1, 1], vocabulary)
    totals = signs[ids].sum(axis=1)
    return ids, (totals > np.median(totals)).astype(np.int32)
