"""Dataset loaders: real IDX files checked against known label histograms, clear errors, the adding problem."""

import gzip
import os
import re
import struct

import numpy as np
import pytest

from keras_stability.config.sections import DATASET_SPECS
from keras_stability.datasets import DataError, load_dataset, load_idx_pair, mnist_small
from keras_stability.datasets.idx import read_idx
from keras_stability.datasets.registry import DEBIAN_FASHION_MNIST, DIGITS, adding_problem, get_dataset

MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # shared/data/mnist/README.md


def test_embedded_mnist_matches_its_published_histogram():
    images, labels = mnist_small()
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert np.bincount(labels).tolist() == MNIST_TEST_HISTOGRAM


def test_mnist_small_splits_are_fixed_and_disjoint():
    first = load_dataset(DATASET_SPECS["mnist_small"](), seed=0)
    second = load_dataset(DATASET_SPECS["mnist_small"](), seed=7)
    assert (len(first.y_train), len(first.y_val), len(first.y_test)) == (8100, 900, 1000)
    np.testing.assert_array_equal(first.x_train, second.x_train)  # the seed changes order, not the split
    total = np.bincount(np.concatenate([first.y_train, first.y_val, first.y_test]))
    assert total.tolist() == MNIST_TEST_HISTOGRAM
    assert len(load_dataset(DATASET_SPECS["mnist_small"](train_size=500), 0).y_train) == 500
    assert first.task == DIGITS and (DIGITS.input_shape, DIGITS.num_classes) == ((28, 28, 1), 10)


def write_idx(path, array, type_code=0x08):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.tobytes())


def test_idx_round_trip_and_errors(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / "images.gz", images)
    write_idx(tmp_path / "labels.gz", np.array([3, 7], np.uint8))
    x, y = load_idx_pair(str(tmp_path / "images.gz"), str(tmp_path / "labels.gz"))
    np.testing.assert_allclose(x[..., 0], images / 255.0, rtol=1e-6)
    assert y.tolist() == [3, 7]
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(DataError, match="is not an IDX file"):
        read_idx(str(tmp_path / "bad.gz"))
    with gzip.open(tmp_path / "short.gz", "wb") as stream:
        stream.write(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + b"\x00\x01")
    with pytest.raises(DataError, match=r"truncated: header says \(5,\), found 2 values"):
        read_idx(str(tmp_path / "short.gz"))
    with pytest.raises(DataError, match="corrupt: md5"):
        read_idx(str(tmp_path / "images.gz"), expected_md5="0" * 32)


def test_idx_directory_through_config_path(tmp_path):
    for split, count in [("train", 20), ("t10k", 6)]:
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", np.zeros((count, 28, 28), np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", (np.arange(count) % 10).astype(np.uint8))
    splits = load_dataset(DATASET_SPECS["mnist"](path=str(tmp_path), validation_fraction=0.25), 0)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (15, 5, 6)
    assert splits.source == f"IDX files in {tmp_path}"
    # train_size cuts after the validation split, as for mnist_small: the held-out sets do not move.
    small = load_dataset(DATASET_SPECS["mnist"](path=str(tmp_path), validation_fraction=0.25, train_size=4), 0)
    np.testing.assert_array_equal(small.y_val, splits.y_val)
    np.testing.assert_array_equal(small.y_train, splits.y_train[:4])


def test_train_size_cuts_mnist_small_after_its_splits():
    full = load_dataset(DATASET_SPECS["mnist_small"](), 0)
    small = load_dataset(DATASET_SPECS["mnist_small"](train_size=500), 0)
    np.testing.assert_array_equal(small.x_train, full.x_train[:500])
    np.testing.assert_array_equal(small.y_val, full.y_val)
    np.testing.assert_array_equal(small.y_test, full.y_test)


@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST), reason="apt-get install dataset-fashion-mnist to run this")
def test_debian_fashion_mnist_is_detected_and_balanced():
    splits = load_dataset(DATASET_SPECS["fashion_mnist"](), 0)
    assert splits.source == f"IDX files in {DEBIAN_FASHION_MNIST}"
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (54000, 6000, 10000)
    assert np.bincount(splits.y_test).tolist() == [1000] * 10  # Fashion-MNIST's test split is balanced
    assert np.bincount(np.concatenate([splits.y_train, splits.y_val])).tolist() == [6000] * 10


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_STABILITY_NO_DOWNLOAD", "1")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv("KERAS_STABILITY_MNIST_DIR", raising=False)
    with pytest.raises(DataError) as error:
        load_dataset(DATASET_SPECS["mnist"](), 0)
    message = str(error.value)
    assert "Dataset 'mnist' is not available here." in message
    assert "KERAS_STABILITY_MNIST_DIR" in message and "tensorflow-datasets" in message
    assert "downloads are disabled" in message
    with pytest.raises(DataError, match="has no train-images-idx3-ubyte"):
        load_dataset(DATASET_SPECS["fashion_mnist"](path=str(tmp_path)), 0)


def test_unknown_dataset_name():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Unrecognized dataset: 'cifar'. Known: mnist_small, mnist, fashion_mnist, adding_problem, zipf_tokens."
        ),
    ):
        get_dataset("cifar")


def test_adding_problem_targets_are_the_sum_of_the_marked_values():
    x, y = adding_problem(20, 50, np.random.default_rng(0))
    assert x.shape == (50, 20, 2) and y.shape == (50, 1)
    markers = x[..., 1]
    assert (markers.sum(axis=1) == 2).all()
    assert (markers[:, :10].sum(axis=1) == 1).all() and (markers[:, 10:].sum(axis=1) == 1).all()
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * markers).sum(axis=1), rtol=1e-6)
    again, _ = adding_problem(20, 50, np.random.default_rng(0))
    np.testing.assert_array_equal(x, again)


def test_the_hochreiter_adding_problem_is_unchanged_and_pascanus_differs():
    # The draws of every adding-problem run before `adding_task` existed: values, then the two markers.
    rng = np.random.default_rng(3)
    values = rng.uniform(0.0, 1.0, (200, 20)).astype(np.float32)
    first, second = rng.integers(0, 10, 200), rng.integers(10, 20, 200)
    x, y = adding_problem(20, 200, np.random.default_rng(3))
    np.testing.assert_array_equal(x[:, :, 0], values)
    np.testing.assert_array_equal(y[:, 0], values[np.arange(200), first] + values[np.arange(200), second])
    # Pascanu et al.'s: markers in [0, 0.1 T) and [0.1 T, 0.5 T), the target their values' mean.
    x, y = adding_problem(200, 2000, np.random.default_rng(3), "pascanu")
    first, second = np.nonzero(x[:, :, 1])[1].reshape(-1, 2).T
    assert (first.min(), first.max(), second.min(), second.max()) == (0, 19, 20, 99)
    np.testing.assert_allclose(y[:, 0], x[:, :, 0][x[:, :, 1] == 1].reshape(-1, 2).mean(axis=1), rtol=1e-6)
    assert y.var() == pytest.approx(1 / 24, rel=0.1)  # the mean of two U(0, 1): variance 1/24
    splits = load_dataset(DATASET_SPECS["adding_problem"](adding_task="pascanu", adding_samples=100), 0)
    assert splits.task.input_shape == (50, 2) and "pascanu" in splits.source
