"""IDX (the MNIST file format) reading, and the embedded `mnist_small` split."""

import gzip
import hashlib
import os
import struct

import numpy as np

MNIST_SMALL_DIR = os.path.join(os.path.dirname(__file__), "mnist_small")
MNIST_SMALL_MD5 = {
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(RuntimeError):
    """A data file is missing or not what it claims to be; the message says how to fix it."""


def read_idx(path: str, expected_md5: str | None = None) -> np.ndarray:
    """Reads one (optionally gzip-compressed) IDX file into a numpy array."""
    if not os.path.exists(path):
        raise DataError(f"IDX file not found: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if expected_md5 is not None and hashlib.md5(data).hexdigest() != expected_md5:
        raise DataError(f"{path} is corrupt: md5 {hashlib.md5(data).hexdigest()} != {expected_md5}.")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}).")
    rank = data[3]
    shape = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    array = np.frombuffer(data, dtype=IDX_DTYPES[data[2]], offset=4 + 4 * rank)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {array.size} values.")
    return array.reshape(shape)


def load_idx_pair(
    images_path: str, labels_path: str, images_md5: str | None = None, labels_md5: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 in [0, 1] with a channel axis (N, 28, 28, 1), labels as int32 (N,)."""
    images = read_idx(images_path, images_md5).astype(np.float32) / 255.0
    labels = read_idx(labels_path, labels_md5).astype(np.int32)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels.")
    return images[..., None], labels


def mnist_small() -> tuple[np.ndarray, np.ndarray]:
    """The embedded real MNIST test split: 10,000 images (N, 28, 28, 1) and labels, checksums verified."""
    names = sorted(MNIST_SMALL_MD5)
    images_name, labels_name = names[0], names[1]
    return load_idx_pair(
        os.path.join(MNIST_SMALL_DIR, images_name),
        os.path.join(MNIST_SMALL_DIR, labels_name),
        MNIST_SMALL_MD5[images_name],
        MNIST_SMALL_MD5[labels_name],
    )
