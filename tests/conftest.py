"""Test set-up: two logical CPU devices for MirroredStrategy, quiet TensorFlow, and a mode runner."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the command sets it: thread-independent bits

import keras
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # no public way to turn determinism off

# Logical devices must be configured before TensorFlow initialises its runtime.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

# The settings of a small experiment's runs, shared by the tests' experiment files: an MLP on 200
# mnist_small examples for 2 epochs (seconds a run). Files name the experiment, seeds and variants.
SMALL_RUN = """\
dataset: {name: mnist_small, train_size: 200}
model: {name: mlp, hidden: [8]}
optimizer: {name: sgd, learning_rate: 0.1}
training: {epochs: 2, batch_size: 50}
"""

MODES = ("eager", "function", "jit")


def run_in_mode(fn, mode, *args):
    """Runs `fn(*args)` eagerly, inside tf.function, or inside tf.function(jit_compile=True)."""
    if mode == "eager":
        return fn(*args)
    return tf.function(fn, jit_compile=(mode == "jit"))(*args)


@pytest.fixture(scope="session")
def two_replicas():
    # The runner's cached strategy: separate MirroredStrategy objects in one process reuse
    # collective instance keys and clash.
    from keras_stability.config.schema import TrainingConfig
    from keras_stability.experiments.training import distribution_strategy

    strategy = distribution_strategy(TrainingConfig(distribute="mirrored"))
    assert strategy.num_replicas_in_sync == 2
    return strategy


@pytest.fixture(autouse=True)
def fresh_keras_state():
    keras.backend.clear_session()
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    # A run turns on op determinism for the whole process (tests that need it train through the
    # runner, which turns it on), and Keras then compiles jit_compile=True models without XLA: a
    # later test's "jit" mode would silently run in graph mode.
    tf_config.disable_op_determinism()
