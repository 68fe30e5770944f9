"""Datasets read from IDX files, including the embedded `mnist_small`."""

from keras_stability.datasets.idx import MNIST_SMALL_DIR, load_idx_pair, mnist_small

__all__ = ["MNIST_SMALL_DIR", "load_idx_pair", "mnist_small"]
