"""The model zoo: architectures by their parameter counts, options that change them."""

import re

import keras
import numpy as np
import pytest

from keras_stability.config.sections import MODEL_SPECS
from keras_stability.experiments.sparse_init import SparseSpectral
from keras_stability.experiments.zoo import build_model, get_model


@pytest.mark.parametrize(
    "config, parameters",
    [
        (MODEL_SPECS["mlp"](), 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10),  # doc 002
        (MODEL_SPECS["deep_mlp"](depth=3, width=32), 784 * 32 + 32 + 2 * (32 * 32 + 32) + 32 * 10 + 10),
        # doc 000: 3×3 convs 1→32→64→128 with pooling 28→14→7→3, fc512.
        (
            MODEL_SPECS["cnn3"](),
            (9 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 128 + 128) + (3 * 3 * 128 * 512 + 512) + 5130,
        ),
        # doc 004: 64, 64 → pool → 128, 128 → pool (7×7), fc512.
        (MODEL_SPECS["cnn4"](), 640 + 36928 + 73856 + 147584 + (7 * 7 * 128 * 512 + 512) + 5130),
        # DeepOBS fmnist_2c2d: 5×5 convs 32, 64, fc1024.
        (MODEL_SPECS["fmnist_2c2d"](), (25 * 32 + 32) + (25 * 32 * 64 + 64) + (7 * 7 * 64 * 1024 + 1024) + 10250),
        (MODEL_SPECS["rnn"](units=8), (2 * 8 + 8 * 8 + 8) + 9),
        (MODEL_SPECS["rnn"](cell="lstm", units=8), 4 * (2 * 8 + 8 * 8 + 8) + 9),
    ],
)
def test_parameter_counts(config, parameters):
    assert build_model(config).count_params() == parameters


def test_options_reach_the_layers():
    keras.utils.set_random_seed(0)
    model = build_model(
        MODEL_SPECS["mlp"](
            hidden=[32], activation="tanh", dropout=0.5, l2=1e-3, initializer="random_normal", init_stddev=1.0
        )
    )
    dense = model.layers[1]
    assert dense.activation.__name__ == "tanh"
    assert isinstance(model.layers[2], keras.layers.Dropout) and model.layers[2].rate == 0.5
    assert dense.kernel_regularizer.get_config()["l2"] == pytest.approx(1e-3)
    assert np.std(dense.kernel.numpy()) == pytest.approx(1.0, rel=0.05)


def test_same_seed_same_weights_and_layers_differ():
    keras.utils.set_random_seed(3)
    first = build_model(MODEL_SPECS["deep_mlp"](depth=3, width=16)).get_weights()
    keras.utils.set_random_seed(3)
    second = build_model(MODEL_SPECS["deep_mlp"](depth=3, width=16)).get_weights()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[2], first[4])  # two 16×16 kernels are not copies of each other


def test_unknown_model_name():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Unrecognized model: 'resnet'. Known: mlp, deep_mlp, cnn3, cnn4, cnn4_pool4, fmnist_2c2d, rnn, embedding_bag."
        ),
    ):
        get_model("resnet")


def test_sparse_spectral_is_pascanus_smart_tanh_recurrent_kernel():
    keras.utils.set_random_seed(0)
    config = MODEL_SPECS["rnn"](units=50, recurrent_initializer="sparse_spectral")
    kernel = build_model(config).layers[0].cell.recurrent_kernel.numpy()
    assert (kernel != 0).sum(axis=1).tolist() == [15] * 50  # 15 entries kept in each row
    assert np.abs(np.linalg.eigvals(kernel)).max() == pytest.approx(0.95, rel=1e-5)
    keras.utils.set_random_seed(0)
    again = build_model(config).layers[0].cell.recurrent_kernel.numpy()
    np.testing.assert_array_equal(kernel, again)  # reproducible from the global seed
    restored = keras.initializers.deserialize(keras.initializers.serialize(SparseSpectral(4, 0.5, seed=1)))
    np.testing.assert_array_equal(restored((8, 8)), SparseSpectral(4, 0.5, seed=1)((8, 8)))
    with pytest.raises(ValueError, match="cannot exceed `units`"):
        MODEL_SPECS["rnn"](units=10, recurrent_initializer="sparse_spectral")
