"""Image preprocessing: torchvision's bilinear `Resize` and `Normalize` against closed forms."""

import numpy as np
import pytest

from keras_stability.config.sections import DATASET_SPECS
from keras_stability.datasets import load_dataset
from keras_stability.datasets.images import normalize_images, resize_images


def test_a_constant_image_stays_constant():
    resized = resize_images(np.full((2, 28, 28, 1), 0.3, np.float32), 64)
    assert resized.shape == (2, 64, 64, 1) and resized.dtype == np.float32
    np.testing.assert_allclose(resized, 0.3, rtol=1e-6)


def test_two_by_two_to_four_by_four_is_the_half_pixel_bilinear_closed_form():
    # Output centres fall at input coordinates −0.25, 0.25, 0.75, 1.25 (clamped at the edges), so
    # each axis maps [a, b] to [a, (3a + b)/4, (a + 3b)/4, b]; the 2-D result is the outer product.
    a, b, c, d = 1.0, 2.0, 3.0, 5.0
    image = np.array([[a, b], [c, d]], np.float32)[None, :, :, None]
    weights = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    expected = weights @ image[0, :, :, 0] @ weights.T
    np.testing.assert_allclose(resize_images(image, 4)[0, :, :, 0], expected, rtol=1e-6)


def test_normalize_is_torchvisions_and_maps_the_unit_interval_onto_minus_one_one():
    pixels = np.linspace(0, 1, 11, dtype=np.float32)
    np.testing.assert_allclose(normalize_images(pixels, 0.5, 0.5), 2 * pixels - 1, atol=1e-7)
    np.testing.assert_allclose(normalize_images(pixels, 0.1307, 0.3081), (pixels - 0.1307) / 0.3081, rtol=1e-6)


def test_the_dataset_options_resize_normalise_and_set_the_task_shape():
    plain = load_dataset(DATASET_SPECS["mnist_small"](classes=[4, 9], train_size=50), 0)
    config = DATASET_SPECS["mnist_small"](classes=[4, 9], train_size=50, image_size=64, normalize=[0.5, 0.5])
    prepared = load_dataset(config, 0)
    assert prepared.task.input_shape == (64, 64, 1) and prepared.task.num_classes == 2
    assert prepared.x_train.shape == (50, 64, 64, 1) and prepared.x_test.shape[1:] == (64, 64, 1)
    assert prepared.x_train.min() == pytest.approx(-1.0) and prepared.x_train.max() <= 1.0
    np.testing.assert_array_equal(prepared.y_test, plain.y_test)
    # The mean of a bilinear enlargement is near the original's (edges weigh a little more).
    assert (prepared.x_val.mean() + 1) / 2 == pytest.approx(plain.x_val.mean(), rel=0.02)


def test_without_the_options_nothing_changes():
    config = DATASET_SPECS["mnist_small"](train_size=20)
    assert config.model_dump()["normalize"] is None and config.model_dump()["image_size"] is None
    splits = load_dataset(config, 0)
    assert splits.x_train.shape == (20, 28, 28, 1) and splits.x_train.min() == 0.0 and splits.x_train.max() == 1.0
    assert "resized" not in splits.source and "normalised" not in splits.source


def test_normalize_is_a_yaml_list_of_mean_and_positive_std(tmp_path):
    from keras_stability.config.loading import ConfigError, load_experiment

    def experiment(normalize):
        path = tmp_path / "x.yaml"
        path.write_text(f"name: x\ndataset: {{name: mnist_small, normalize: {normalize}}}\nvariants: {{a: {{}}}}\n")
        return load_experiment(str(path))

    assert experiment("[0.5, 0.5]").variants["a"].dataset.normalize == [0.5, 0.5]
    for bad, message in (("[0.5, 0.0]", "std > 0"), ("[0.5]", "at least 2 items"), ("0.5", "valid list")):
        with pytest.raises(ConfigError, match=message):
            experiment(bad)
