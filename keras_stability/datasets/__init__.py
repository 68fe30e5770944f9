"""Datasets: an IDX reader, the embedded `mnist_small`, and the registry experiments draw from (`Splits`
of arrays and the `Task` they pose)."""

from keras_stability.datasets.idx import MNIST_SMALL_DIR, DataError, load_idx_pair, mnist_small
from keras_stability.datasets.registry import DATASETS, Splits, Task, get_dataset, load_dataset

__all__ = [
    "DATASETS",
    "MNIST_SMALL_DIR",
    "DataError",
    "Splits",
    "Task",
    "get_dataset",
    "load_dataset",
    "load_idx_pair",
    "mnist_small",
]
