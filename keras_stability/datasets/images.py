"""Image preprocessing that PyTorch code writes as torchvision transforms: `Resize` and `Normalize`.

Pixels arrive as float32 in [0, 1] (`idx.load_idx_pair` divides by 255, as `ToTensor` does). Resizing
is bilinear with half-pixel centres and no antialiasing (`tf.image.resize`), which is what PIL's and
torchvision's bilinear `Resize` compute when enlarging (antialiasing only changes shrinking; PIL
rounds to 8-bit pixels, which this float resize does not). Normalising after resizing gives the
same pixels as before it, since a bilinear pixel is a weighted mean with weights summing to one.
"""

import dataclasses

import numpy as np

BATCH = 1000  # images per resize call: bounds TensorFlow's working copy of a split


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, H, W, C) images to (N, size, size, C), half-pixel centres, no antialias.

    Args:
        images: float images, (N, H, W, C).
        size: the output height and width.

    Returns:
        float32 images (N, size, size, C).

    References:
        torchvision `transforms.Resize(size)` (bilinear); TensorFlow `tf.image.resize(method="bilinear",
        antialias=False)`.

    >>> resize_images(np.array([[[[0.0], [1.0]], [[0.0], [1.0]]]]), 4)[0, 0, :, 0].tolist()
    [0.0, 0.25, 0.75, 1.0]
    """
    import tensorflow as tf  # only when a file resizes: validating and loading need no TensorFlow

    if images.shape[1:3] == (size, size):
        return images.astype(np.float32)
    parts = [
        tf.image.resize(images[start : start + BATCH], (size, size), method="bilinear", antialias=False).numpy()
        for start in range(0, len(images), BATCH)
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, size, size, images.shape[3]), np.float32)


def normalize_images(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(x − mean) / std, as torchvision's `Normalize((mean,), (std,))` on one channel.

    Args:
        images: float images in [0, 1].
        mean: subtracted from every pixel.
        std: the divisor, > 0.

    Returns:
        float32 images; `Normalize(0.5, 0.5)` maps [0, 1] onto [−1, 1].

    >>> normalize_images(np.array([0.0, 0.5, 1.0]), 0.5, 0.5).tolist()
    [-1.0, 0.0, 1.0]
    """
    return ((images - np.float32(mean)) / np.float32(std)).astype(np.float32)


def apply_image_options(splits, image_size=None, normalize=None):
    """`splits` with every image split resized to `image_size` and normalised by `normalize` (mean, std);
    the task's input shape follows the resize. Without either option, `splits` itself."""
    if image_size is None and normalize is None:
        return splits

    def prepared(images):
        if image_size is not None:
            images = resize_images(images, image_size)
        if normalize is not None:
            images = normalize_images(images, *normalize)
        return images

    x_train, x_val, x_test = (prepared(x) for x in (splits.x_train, splits.x_val, splits.x_test))
    task = dataclasses.replace(splits.task, input_shape=tuple(x_train.shape[1:]))
    notes = ([f"resized to {image_size}×{image_size} (bilinear)"] if image_size else []) + (
        [f"normalised (x − {normalize[0]}) / {normalize[1]}"] if normalize else []
    )
    source = f"{splits.source}; {', '.join(notes)}"
    return dataclasses.replace(splits, x_train=x_train, x_val=x_val, x_test=x_test, task=task, source=source)
