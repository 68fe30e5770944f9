"""PyTorch's default initialisation: bounds and variance against the closed form, and the zoo's fan-ins.

A uniform U(−b, b) has variance b²/3; with b = 1/√fan_in that is 1/(3·fan_in). Its sample variance
over n draws has relative standard error √(4/5 / n) (the uniform's kurtosis is 9/5), so 0.04 % for
n = 5·10⁶ and 2 % for n = 2,000: the tolerances below are about five standard errors.
"""

import math
import os

import keras
import numpy as np
import pytest

from keras_stability.config.sections import MODEL_SPECS
from keras_stability.datasets.registry import Task
from keras_stability.experiments.torch_init import TorchBiasUniform, torch_kernel_uniform
from keras_stability.experiments.zoo import build_model, output_shape

TORCH = dict(initializer="torch_default", bias_initializer="torch_default")


def assert_torch_uniform(values, fan_in, rel):
    bound = 1.0 / math.sqrt(fan_in)
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.99 * bound  # reaches its bound: not a narrower law
    assert np.var(values) == pytest.approx(1.0 / (3.0 * fan_in), rel=rel)
    assert abs(np.mean(values)) < 5 * bound / math.sqrt(3 * values.size)


def test_kernel_bound_and_variance_for_dense_and_conv_shapes():
    keras.utils.set_random_seed(0)
    dense = keras.ops.convert_to_numpy(torch_kernel_uniform()((2048, 2048)))
    assert_torch_uniform(dense, 2048, rel=0.005)
    conv = keras.ops.convert_to_numpy(torch_kernel_uniform()((3, 3, 64, 4096)))  # fan-in 3·3·64
    assert_torch_uniform(conv, 576, rel=0.005)


def test_bias_bound_variance_and_serialization():
    bias = keras.ops.convert_to_numpy(TorchBiasUniform(fan_in=576, seed=1)((100_000,)))
    assert_torch_uniform(bias, 576, rel=0.02)
    restored = keras.initializers.deserialize(keras.initializers.serialize(TorchBiasUniform(9, seed=3)))
    assert isinstance(restored, TorchBiasUniform) and restored.fan_in == 9 and restored.bound == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="fan-in"):
        TorchBiasUniform(0)


@pytest.mark.parametrize("name", ["mlp", "cnn3", "cnn4_pool4"])
def test_zoo_layers_get_their_own_fan_in(name):
    keras.utils.set_random_seed(0)
    model = build_model(MODEL_SPECS[name](**TORCH), Task("classification", (64, 64, 1), 2))
    layers = [layer for layer in model.layers if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]
    for layer in layers:
        kernel = layer.kernel.numpy()
        fan_in = int(np.prod(kernel.shape[:-1]))  # Dense (in, out); Conv2D (kh, kw, in, out)
        assert layer.bias_initializer.fan_in == fan_in, layer.name
        bound = 1.0 / math.sqrt(fan_in)
        assert np.abs(kernel).max() <= bound and np.abs(layer.bias.numpy()).max() <= bound, layer.name
        if kernel.size >= 20_000:  # enough draws for a 5 % check on the variance
            assert np.var(kernel) == pytest.approx(bound**2 / 3, rel=0.05), layer.name


def test_cnn4_pool4_at_64_reads_4x4x128_before_fc512():
    model = build_model(MODEL_SPECS["cnn4_pool4"](**TORCH), Task("classification", (64, 64, 1), 2))
    *convolutions, _flatten, fc512, logits = model.layers
    assert output_shape([keras.Input((64, 64, 1)), *convolutions]) == (None, 4, 4, 128)
    assert fc512.kernel.shape == (4 * 4 * 128, 512) and fc512.bias_initializer.fan_in == 2048
    assert logits.kernel.shape == (512, 2)


def test_default_initialisation_is_unchanged_by_the_fan_in_plumbing():
    # The same draws as before fan-ins were computed: computing shapes builds nothing.
    keras.utils.set_random_seed(5)
    first = build_model(MODEL_SPECS["cnn3"]()).get_weights()
    keras.utils.set_random_seed(5)
    plain = [keras.initializers.GlorotUniform()((3, 3, 1, 32)), keras.initializers.Zeros()((32,))]
    np.testing.assert_array_equal(first[0], keras.ops.convert_to_numpy(plain[0]))
    assert not first[1].any()


def test_rnn_refuses_torch_default():
    with pytest.raises(ValueError, match=r"nn\.RNN"):
        MODEL_SPECS["rnn"](**TORCH)


def test_matches_draws_of_pytorch_itself():
    # torch 2.13.0 (CPU), torch.manual_seed(0): the first 10,000 weights of nn.Conv2d(64, 128, 3) and the
    # bias of nn.Linear(576, 4096), both of fan-in 576, saved once (torch is not a dependency).
    scipy_stats = pytest.importorskip("scipy.stats")
    reference = np.load(os.path.join(os.path.dirname(__file__), "..", "data", "torch_default_reference.npz"))
    keras.utils.set_random_seed(0)
    kernel = keras.ops.convert_to_numpy(torch_kernel_uniform()((3, 3, 64, 128))).ravel()
    bias = keras.ops.convert_to_numpy(TorchBiasUniform(576)((4096,)))
    assert scipy_stats.ks_2samp(kernel, reference["conv_weight"]).pvalue > 0.001
    assert scipy_stats.ks_2samp(bias, reference["linear_bias"]).pvalue > 0.001
    # A law of another bound is told apart: Keras's he_uniform (√6 / √fan_in) is not PyTorch's.
    he = keras.ops.convert_to_numpy(keras.initializers.HeUniform(seed=0)((3, 3, 64, 128))).ravel()
    assert scipy_stats.ks_2samp(he, reference["conv_weight"]).pvalue < 1e-6
