"""The dataset registry: every dataset an experiment can name, as deterministic train/val/test arrays.

Besides the built-in names, a dataset section may name a factory (see `keras_stability.factories`);
`load_dataset` reads what it returns into the same `Splits`. For every dataset, `train_size` keeps
the first N examples of the training split after the test and validation splits are taken; on the
digit and Fashion-MNIST datasets `classes: [a, b, ...]` first keeps those classes, relabelled 0, 1, ...,
and `image_size` / `normalize` then resize and normalise the images (`images`).
"""

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from keras_stability.datasets.download import load_tfds
from keras_stability.datasets.idx import DataError, load_idx_pair, mnist_small
from keras_stability.datasets.images import apply_image_options
from keras_stability.datasets.synthetic import SPLIT_SEED, adding_problem, zipf_tokens
from keras_stability.factories import described, factory_text, resolve_factory

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
ENVIRONMENT = {"mnist": "KERAS_STABILITY_MNIST_DIR", "fashion_mnist": "KERAS_STABILITY_FASHION_MNIST_DIR"}


@dataclass(frozen=True)
class Task:
    """What a model must fit: `kind` "classification" (integer labels) or "regression", the shape of
    one input example, and the number of classes (None for regression)."""

    kind: str
    input_shape: tuple
    num_classes: int | None


DIGITS = Task("classification", (28, 28, 1), 10)


@dataclass(frozen=True)
class Splits:
    """Arrays of one dataset and the `Task` they pose."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: Task
    source: str


def split_off(x, y, fraction, rng):
    """Shuffles once with `rng` and returns (rest, held-out `fraction`)."""
    order = rng.permutation(len(y))
    held = max(1, round(fraction * len(y)))
    keep, out = order[held:], order[:held]
    return (x[keep], y[keep]), (x[out], y[out])


def fixed_splits(x, y, validation_fraction, task, source):
    """Test (10 %), then `validation_fraction` of the rest for validation, drawn with SPLIT_SEED: the
    same split for every run seed."""
    rng = np.random.default_rng(SPLIT_SEED)
    (rest_x, rest_y), test = split_off(x, y, 0.1, rng)
    train, validation = split_off(rest_x, rest_y, validation_fraction, rng)
    return Splits(*train, *validation, *test, task, source)


def load_mnist_small(config, seed):
    images, labels = mnist_small()
    return fixed_splits(
        images,
        labels,
        config.validation_fraction,
        DIGITS,
        "embedded MNIST test split (10,000 real digits): 10% test, then validation_fraction of the rest",
    )


IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx(directory, stem):
    for candidate in (stem + ".gz", stem):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    raise DataError(f"{directory} has no {stem}[.gz]")


def idx_directory(name, config):
    """Where IDX files for `name` live: `path:` in the config, an environment variable, or Debian's."""
    if config.path:
        return config.path
    if os.environ.get(ENVIRONMENT[name]):
        return os.environ[ENVIRONMENT[name]]
    if name == "fashion_mnist" and os.path.isdir(DEBIAN_FASHION_MNIST):
        return DEBIAN_FASHION_MNIST
    return None


def how_to_get(name):
    debian = (
        " `apt-get install dataset-fashion-mnist` (installs it at /usr/share/datasets/fashion-mnist), or"
        if name == "fashion_mnist"
        else ""
    )
    return (
        f"Dataset {name!r} is not available here. Get it by one of:{debian} downloading the four IDX .gz "
        f"files into a directory and setting `dataset.path:` or {ENVIRONMENT[name]}, or running once with "
        "internet access so tensorflow-datasets can download it (TFDS_DATA_DIR chooses where). "
        "Offline, `mnist_small` (embedded) always works."
    )


def load_idx_dataset(name):
    def load(config, seed):
        directory = idx_directory(name, config)
        try:
            if directory is not None:
                train = load_idx_pair(*(find_idx(directory, stem) for stem in IDX_NAMES["train"]))
                test = load_idx_pair(*(find_idx(directory, stem) for stem in IDX_NAMES["test"]))
                source = f"IDX files in {directory}"
            else:
                train, test = load_tfds(name)
                train = (train[0].reshape(-1, 28, 28, 1), train[1])
                test = (test[0].reshape(-1, 28, 28, 1), test[1])
                source = "tensorflow-datasets"
        except DataError as error:
            raise DataError(f"{how_to_get(name)} ({error})") from None
        (x_train, y_train), (x_val, y_val) = split_off(
            *train, config.validation_fraction, np.random.default_rng(SPLIT_SEED)
        )
        return Splits(x_train, y_train, x_val, y_val, test[0], test[1], DIGITS, source)

    return load


def load_adding_problem(config, seed):
    x, y = adding_problem(
        config.sequence_length, config.adding_samples, np.random.default_rng(seed), config.adding_task
    )
    return fixed_splits(
        x,
        y,
        config.validation_fraction,
        Task("regression", x.shape[1:], None),
        f"adding problem ({config.adding_task}), T={config.sequence_length}, generated from seed {seed}",
    )


def load_zipf_tokens(config, seed):
    x, y = zipf_tokens(
        config.vocabulary,
        config.sequence_length,
        config.token_samples,
        config.zipf_exponent,
        np.random.default_rng(seed),
    )
    return fixed_splits(
        x,
        y,
        config.validation_fraction,
        Task("classification", x.shape[1:], 2),
        f"Zipf tokens, vocabulary {config.vocabulary}, length {config.sequence_length}, generated from seed {seed}",
    )


def keep_classes(splits, classes):
    """`splits` with only the examples of `classes`, labelled by their position in `classes`."""
    relabel = np.full(10, -1, np.int32)
    relabel[list(classes)] = np.arange(len(classes), dtype=np.int32)

    def kept(x, y):
        mask = relabel[y] >= 0
        return x[mask], relabel[y[mask]]

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        kept(splits.x_train, splits.y_train),
        kept(splits.x_val, splits.y_val),
        kept(splits.x_test, splits.y_test),
    )
    task = dataclasses.replace(splits.task, num_classes=len(classes))
    source = f"{splits.source}; classes {list(classes)} relabelled 0..{len(classes) - 1}"
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, task, source)


DATASETS = {
    "mnist_small": load_mnist_small,
    "mnist": load_idx_dataset("mnist"),
    "fashion_mnist": load_idx_dataset("fashion_mnist"),
    "adding_problem": load_adding_problem,
    "zipf_tokens": load_zipf_tokens,
}
# Datasets whose splits do not depend on the run seed (SPLIT_SEED fixes them), so one load can serve every
# seed; the generated ones (adding_problem, zipf_tokens) are drawn from it.
SEED_INDEPENDENT = frozenset({"mnist_small", "mnist", "fashion_mnist"})


def get_dataset(name):
    if name not in DATASETS:
        raise ValueError(f"Unrecognized dataset: {name!r}. Known: {', '.join(DATASETS)}.")
    return DATASETS[name]


def as_arrays(split, where):
    """(x, y) numpy arrays from an (x, y) pair or a finite `tf.data.Dataset` of (x, y), read once."""
    import tensorflow as tf

    if isinstance(split, tf.data.Dataset):
        if split.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise TypeError(
                f"{where} is an infinite tf.data.Dataset. Received: cardinality -1; "
                "end it (e.g. `.take(n)`): it is read once into memory"
            )
        batched = split.element_spec[0].shape.rank and split.element_spec[0].shape[0] is None
        pairs = list(split.as_numpy_iterator())
        if not pairs:
            raise TypeError(f"{where} is an empty tf.data.Dataset. Received: no elements")
        join = np.concatenate if batched else np.stack
        return join([x for x, _ in pairs]), join([y for _, y in pairs])
    if isinstance(split, (tuple, list)) and len(split) == 2:
        x, y = (np.asarray(part) for part in split)
        if len(x) != len(y):
            raise TypeError(f"{where} has {len(x)} inputs but {len(y)} targets. Received: x {x.shape}, y {y.shape}")
        return x, y
    raise TypeError(
        f"{where} must be an (x, y) pair of arrays or a tf.data.Dataset of (x, y). Received: {described(split)}"
    )


def load_factory_dataset(config, seed):
    """The `Splits` of a factory dataset section: `load(seed=seed, **args)` read into arrays."""
    text = factory_text(config, "dataset")[0]
    returned = resolve_factory(text)(seed=seed, **config.args)
    if not isinstance(returned, dict) or not {"train", "validation", "test"} <= set(returned):
        raise TypeError(
            f"The dataset factory {text!r} must return a dict with keys train, validation and test. "
            f"Received: {described(returned)}"
            + (f" with keys {sorted(returned)}" if isinstance(returned, dict) else "")
        )
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        as_arrays(returned[part], f"{text} {part!r}") for part in ("train", "validation", "test")
    )
    labels = (y_train, y_val, y_test)
    kind = returned.get(
        "task", "classification" if all(np.issubdtype(y.dtype, np.integer) for y in labels) else "regression"
    )
    if kind not in ("classification", "regression"):
        raise TypeError(
            f"The dataset factory {text!r} returned task {kind!r}. Received: {kind!r}; "
            "use 'classification' or 'regression'"
        )
    classes = int(max(y.max() for y in labels)) + 1 if kind == "classification" else None
    return Splits(
        x_train, y_train, x_val, y_val, x_test, y_test, Task(kind, x_train.shape[1:], classes), f"factory {text}"
    )


def load_dataset(config, seed):
    """The `Splits` of `config` (a dataset section) for run seed `seed`, `classes`, `train_size`, then
    `image_size` and `normalize` applied."""
    name = getattr(config, "name", None)
    splits = (
        get_dataset(name)(config, seed)
        if name in DATASETS or not hasattr(config, "args")
        else load_factory_dataset(config, seed)
    )
    if getattr(config, "classes", None):
        splits = keep_classes(splits, config.classes)
    size = getattr(config, "train_size", None)
    if size is not None:
        splits = dataclasses.replace(splits, x_train=splits.x_train[:size], y_train=splits.y_train[:size])
    # Last, so that only the images kept are resized.
    return apply_image_options(splits, getattr(config, "image_size", None), getattr(config, "normalize", None))
