"""Thinned step logs: a long run's compacted step log keeps, per block of steps, what reports read.

A run planned for more than `MAX_BLOCKS` steps would commit every one of them (the adding problem:
40,500 steps, 450 KB gzipped per run). When such a run is compacted (`step_logs`), its steps are cut
into blocks of `stride(planned_steps)` consecutive steps, and each block keeps

- its last step: every `stride`-th step, a systematic sample of the run's steps that the median, the
  histogram and the per-step plot read (`sampled`);
- its step with the largest finite `grad_norm` (the first, on a tie): the run's largest norm, which
  summaries and claims report, stays exact;
- its first step with a non-finite `loss` or `grad_norm`;

and the run keeps its last step. Kept rows are the steps.csv lines byte for byte. A run of
`MAX_BLOCKS` planned steps or fewer keeps every row. Thinning a thinned log keeps every row, which is
how a reader tells a thinned log from a damaged one (`check_thinned`).
"""

import math

import numpy as np

MAX_BLOCKS = 2000


def planned_steps(config: dict, steps_per_epoch: int | None) -> int | None:
    """The steps a run's resolved configuration plans (epochs × steps per epoch); None when unknown."""
    epochs = config.get("training", {}).get("epochs")
    if not isinstance(epochs, int) or not isinstance(steps_per_epoch, int):
        return None
    return epochs * steps_per_epoch


def stride(planned: int | None) -> int:
    """Steps per block for a run planned for `planned` steps: 1 (every row kept) up to `MAX_BLOCKS`."""
    return 1 if planned is None else max(1, math.ceil(planned / MAX_BLOCKS))


def run_stride(config: dict, meta: dict) -> int:
    """The stride a run's step log is thinned at, from its config.yaml's `config` and its meta.json."""
    return stride(planned_steps(config, meta.get("steps_per_epoch")))


def kept(step: np.ndarray, loss: np.ndarray, grad_norm: np.ndarray, every: int) -> np.ndarray:
    """A boolean mask over the rows (steps in increasing order) that a log thinned at `every` keeps."""
    keep = np.zeros(len(step), dtype=bool)
    if every == 1 or len(step) == 0:
        keep[:] = True
        return keep
    block = (step - 1) // every
    keep |= step % every == 0
    keep[-1] = True
    finite = np.flatnonzero(np.isfinite(grad_norm))
    # Sorted by block, then largest norm, then earliest row: the first row of each block is its peak.
    order = finite[np.lexsort((finite, -grad_norm[finite], block[finite]))]
    keep[order[np.unique(block[order], return_index=True)[1]]] = True
    nonfinite = np.flatnonzero(~(np.isfinite(loss) & np.isfinite(grad_norm)))
    keep[nonfinite[np.unique(block[nonfinite], return_index=True)[1]]] = True
    return keep


def sampled(step: np.ndarray, every: int) -> np.ndarray:
    """A boolean mask over a (thinned or full) log's rows: the systematic sample, every `every`-th step."""
    return np.ones(len(step), dtype=bool) if every == 1 else step % every == 0


def check_thinned(table: dict[str, np.ndarray], every: int, last_step: int, steps_per_epoch: int) -> str | None:
    """What is wrong with `table` as a log of `last_step` steps thinned at `every`; None when nothing is."""
    step = table["step"]
    if len(step) == 0 or np.any(np.diff(step) <= 0) or step[0] < 1 or step[-1] != last_step:
        return f"its steps do not rise from 1 to step {last_step}"
    if not np.array_equal(table["epoch"], (step - 1) // steps_per_epoch + 1):
        return f"its epochs do not hold {steps_per_epoch} steps each"
    if not np.array_equal(step[sampled(step, every)], np.arange(every, last_step + 1, every)):
        return f"it lacks a step at some multiple of {every}"
    if not kept(step, table["loss"], table["grad_norm"], every).all():
        return f"it keeps more than blocks of {every} steps keep"
    return None
