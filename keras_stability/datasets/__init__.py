"""Datasets: an IDX reader, the embedded `mnist_small`, and the registry experiments draw from."""

from keras_stability.datasets.idx import MNIST_SMALL_DIR, DataError, load_idx_pair, mnist_small
from keras_stability.datasets.registry import DATASETS, Splits, get_dataset, load_dataset

__all__ = ["DATASETS", "MNIST_SMALL_DIR", "DataError", "Splits", "get_dataset", "load_dataset", "load_idx_pair", "mnist_small"]
