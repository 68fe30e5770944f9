"""The second edition's zoo and dataset additions: doc 004's CNN, initialisations as the documents
and DeepOBS write them, two-class subsets, the Zipf-token sparse task and the embedding model."""

import keras
import numpy as np
import pydantic
import pytest
import tensorflow as tf

from keras_stability.config.sections import DATASET_SPECS, MODEL_SPECS
from keras_stability.datasets import load_dataset
from keras_stability.datasets.registry import SPLIT_SEED, zipf_tokens
from keras_stability.experiments.zoo import build_model
from keras_stability.transforms import clip_by_global_norm, global_norm


def test_doc004_cnn_pools_after_every_convolution_and_ends_in_the_tasks_classes():
    two_digits = load_dataset(DATASET_SPECS["mnist_small"](classes=[4, 9]), 0)
    model = build_model(MODEL_SPECS["cnn4_pool4"](), two_digits.task)
    # 3×3 convs 1→64→64→128→128, each pooled: 28→14→7→3→1, so fc512 reads 128 features, then 2 logits.
    expected = (9 * 64 + 64) + (9 * 64 * 64 + 64) + (9 * 64 * 128 + 128) + (9 * 128 * 128 + 128) + (128 * 512 + 512)
    assert model.count_params() == expected + 512 * 2 + 2
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    sizes = [layer.compute_output_shape((None, size, size, 64))[1] for layer, size in zip(pools, [28, 14, 7, 3])]
    assert sizes == [14, 7, 3, 1]
    assert model(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 2)


def test_two_class_subset_relabels_in_the_given_order():
    full = load_dataset(DATASET_SPECS["mnist_small"](), 0)
    pair = load_dataset(DATASET_SPECS["mnist_small"](classes=[9, 4]), 0)
    assert pair.task.num_classes == 2 and "classes [9, 4]" in pair.source
    for x_all, y_all, x, y in [
        (full.x_train, full.y_train, pair.x_train, pair.y_train),
        (full.x_test, full.y_test, pair.x_test, pair.y_test),
    ]:
        np.testing.assert_array_equal(x, x_all[np.isin(y_all, [4, 9])])
        np.testing.assert_array_equal(y, np.where(y_all[np.isin(y_all, [4, 9])] == 9, 0, 1))
    sized = load_dataset(DATASET_SPECS["mnist_small"](classes=[9, 4], train_size=100), 0)
    np.testing.assert_array_equal(sized.y_train, pair.y_train[:100])  # classes first, then train_size


@pytest.mark.parametrize(
    "classes, message", [([4], "at least 2"), ([4, 4], "must differ"), ([4, 10], "less than or equal to 9")]
)
def test_classes_are_checked(classes, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        DATASET_SPECS["mnist"](classes=classes)


def test_doc002_random_normal_reaches_weights_and_biases():
    keras.utils.set_random_seed(0)
    config = MODEL_SPECS["mlp"](initializer="random_normal", init_stddev=1.0, bias_initializer="random_normal")
    model = build_model(config)
    kernel, bias = model.layers[1].kernel.numpy(), model.layers[1].bias.numpy()  # 784×128 and 128
    # tf.random_normal's default stddev is 1: sample stddevs within a few standard errors of 1.
    assert np.std(kernel) == pytest.approx(1.0, abs=4 / np.sqrt(2 * kernel.size))
    assert np.std(bias) == pytest.approx(1.0, abs=4 / np.sqrt(2 * bias.size) + 0.05)
    assert np.all(build_model(MODEL_SPECS["mlp"]()).layers[1].bias.numpy() == 0)  # the default stays zeros


def test_deepobs_initialisation_of_fmnist_2c2d():
    keras.utils.set_random_seed(0)
    config = MODEL_SPECS["fmnist_2c2d"](
        initializer="truncated_normal", init_stddev=0.05, bias_initializer="constant", bias_value=0.05
    )
    model = build_model(config)
    kernels = [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]
    biases = [layer.bias.numpy() for layer in model.layers if hasattr(layer, "bias")]
    assert len(kernels) == len(biases) == 4  # DeepOBS initialises both convs and both dense layers alike
    for kernel in kernels:
        assert np.max(np.abs(kernel)) <= 2 * 0.05  # truncated at two standard deviations
        # A normal truncated at ±2σ has stddev σ·0.8796 (1 − 2·2φ(2)/(2Φ(2) − 1), square-rooted).
        assert np.std(kernel) == pytest.approx(0.05 * 0.8796, rel=0.1)
    for bias in biases:
        np.testing.assert_array_equal(bias, np.float32(0.05))


def test_bias_value_needs_a_constant_bias():
    with pytest.raises(pydantic.ValidationError, match="applies to `bias_initializer: constant` only"):
        MODEL_SPECS["mlp"](bias_value=0.05)


def test_rnn_recurrent_initialisation_as_pascanu():
    keras.utils.set_random_seed(0)
    model = build_model(
        MODEL_SPECS["rnn"](units=50, activation="tanh", recurrent_initializer="random_normal", recurrent_stddev=0.1)
    )
    recurrent = model.layers[0].cell.recurrent_kernel.numpy()
    assert recurrent.shape == (50, 50)
    assert np.std(recurrent) == pytest.approx(0.1, rel=0.05)


def test_zipf_tokens_repeat_ids_and_balance_labels():
    ids, labels = zipf_tokens(1000, 51, 4000, 1.2, np.random.default_rng(0))
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 1000
    counts = np.bincount(ids.ravel(), minlength=1000) / ids.size
    weights = np.arange(1, 1001) ** -1.2
    np.testing.assert_allclose(counts[:3], (weights / weights.sum())[:3], rtol=0.05)  # the Zipf law
    assert np.mean([len(set(row)) < len(row) for row in ids]) == 1.0  # every sequence repeats an id
    signs = np.random.default_rng(SPLIT_SEED).choice([-1, 1], 1000)
    totals = signs[ids].sum(axis=1)
    np.testing.assert_array_equal(labels, totals > np.median(totals))
    assert 0.4 < labels.mean() <= 0.5


def test_embedding_bag_gradient_is_sparse_with_repeated_rows_and_clipped_by_its_dense_norm():
    splits = load_dataset(DATASET_SPECS["zipf_tokens"](token_samples=200), 0)
    keras.utils.set_random_seed(0)
    model = build_model(MODEL_SPECS["embedding_bag"](vocabulary=1000, embedding_dim=4), splits.task)
    x, y = tf.constant(splits.x_train[:8]), tf.constant(splits.y_train[:8])
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x))
    gradients = tape.gradient(loss, model.trainable_variables)
    embedding_gradient = gradients[0]
    assert isinstance(embedding_gradient, tf.IndexedSlices)
    indices = embedding_gradient.indices.numpy()
    assert len(np.unique(indices)) < len(indices)  # repeated ids: repeated rows
    dense = [tf.convert_to_tensor(g) for g in gradients]
    np.testing.assert_allclose(global_norm(gradients), tf.linalg.global_norm(dense), rtol=1e-6)
    clipped, _ = clip_by_global_norm(1e-3)(gradients, model.trainable_variables)
    np.testing.assert_allclose(tf.linalg.global_norm([tf.convert_to_tensor(g) for g in clipped]), 1e-3, rtol=1e-5)
