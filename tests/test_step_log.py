"""StepLog: rows in order, wrap-around keeps the newest, drain empties."""

import re

import numpy as np
import pytest
import tensorflow as tf

from keras_stability.step_log import StepLog


def test_rows_come_back_in_order_and_drain_empties():
    log = StepLog(3)
    write = tf.function(log.write)
    for step in range(2):
        write(tf.constant(float(step)), tf.constant(10.0 + step), tf.constant(20.0 + step))
    np.testing.assert_array_equal(log.drain(), [[0, 10, 20], [1, 11, 21]])
    assert log.drain().shape == (0, 3)


def test_wrap_around_keeps_the_newest_rows():
    log = StepLog(3)
    for step in range(5):
        log.write(tf.constant(float(step)), tf.constant(0.0), tf.constant(0.0))
    np.testing.assert_array_equal(log.drain()[:, 0], [2, 3, 4])


def test_capacity_is_checked():
    with pytest.raises(ValueError, match=re.escape("StepLog capacity must be an integer ≥ 1. Received: capacity=0.")):
        StepLog(0)
