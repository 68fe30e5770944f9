"""MNIST and Fashion-MNIST through tensorflow-datasets, failing fast when the download cannot start.

tensorflow-datasets retries a connection that cannot start for more than five minutes; here a
connection to its host is tried first, for `CONNECT_TIMEOUT_S`, and a `DataError` says why not.
"""

import logging
import os
import socket
import threading

import numpy as np

from keras_stability.datasets.idx import DataError

# Where tensorflow-datasets downloads MNIST and Fashion-MNIST from, and how long to wait for it:
# tensorflow-datasets itself retries a connection that cannot start for more than five minutes.
DOWNLOAD_HOST = ("storage.googleapis.com", 443)
CONNECT_TIMEOUT_S = 10


_UNREACHABLE = {}  # (host, port) → why it could not be reached: tried once per process, not once per run


def check_download_host():
    """Raises `DataError` within `CONNECT_TIMEOUT_S` unless a connection to `DOWNLOAD_HOST` opens.

    The connection is tried in a daemon thread: a DNS look-up takes no timeout and can hang for
    longer than the connection's own."""
    host, port = DOWNLOAD_HOST
    if (host, port) in _UNREACHABLE:
        raise DataError(_UNREACHABLE[host, port])
    outcome = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
            outcome.append(None)
        except OSError as error:  # DNS failure, refused, unreachable, timed out
            outcome.append(error)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S)
    if not outcome or outcome[0] is not None:
        reason = outcome[0] if outcome else f"no answer in {CONNECT_TIMEOUT_S} s"
        _UNREACHABLE[host, port] = f"cannot download it: no connection to {host}:{port} ({reason})"
        raise DataError(_UNREACHABLE[host, port])


def load_tfds(name):
    """Both splits through tensorflow-datasets: downloads once, then reads its local copy."""
    try:
        import tensorflow_datasets as tfds
    except ModuleNotFoundError:  # an extra of its own: only these downloads use it
        raise DataError(
            'tensorflow-datasets is not installed. Install it with: pip install "keras-stability[tfds]"'
        ) from None

    data_dir = os.environ.get("TFDS_DATA_DIR")
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # "Variant folder ... has no dataset_info.json" on a first download
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            if os.environ.get("KERAS_STABILITY_NO_DOWNLOAD"):
                raise DataError("downloads are disabled (KERAS_STABILITY_NO_DOWNLOAD is set)")
            check_download_host()
        builder.download_and_prepare()
        train, test = tfds.as_numpy(builder.as_dataset(split=["train", "test"], batch_size=-1, as_supervised=True))
    except DataError:
        raise
    except Exception as error:  # tfds raises many kinds of network and file errors
        raise DataError(f"tensorflow-datasets could not provide {name!r}: {type(error).__name__}: {error}") from None
    finally:
        absl.setLevel(level)
    to_arrays = lambda pair: (pair[0].astype(np.float32) / 255.0, pair[1].astype(np.int32))  # noqa: E731
    return to_arrays(train), to_arrays(test)
