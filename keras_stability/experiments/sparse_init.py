"""Pascanu et al.'s "smart tanh" recurrent initialisation: sparse Gaussian rows at a set spectral radius."""

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="keras_stability")
class SparseSpectral(keras.initializers.Initializer):
    """A square recurrent kernel with `nonzero` Gaussian entries per row, scaled to `spectral_radius`.

    Each row keeps `nonzero` entries at random columns (the rest are zero); the matrix is then divided
    by its largest eigenvalue modulus and multiplied by `spectral_radius`, so the Gaussian's scale
    does not matter. Pascanu et al. keep 15 entries of each of 50 rows of W_hh, where the state update
    is h_t = tanh(h_{t−1} W_hh + …), the orientation of Keras's `recurrent_kernel`.

    Args:
        nonzero: entries kept per row (≤ the number of units).
        spectral_radius: the largest |eigenvalue| of the result (0.95 in their code).
        seed: as Keras's initializers: None draws from the global seed (`keras.utils.set_random_seed`).

    References:
        Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural networks"
        (ICML); their code, github.com/pascanur/trainingRNNs, RNN.py, `state['init'] == 'smart_tanh'`.

    >>> kernel = np.asarray(SparseSpectral(nonzero=3, spectral_radius=0.5, seed=0)((6, 6)))
    >>> (kernel != 0).sum(axis=1).tolist(), round(float(np.abs(np.linalg.eigvals(kernel)).max()), 4)
    ([3, 3, 3, 3, 3, 3], 0.5)
    """

    def __init__(self, nonzero: int = 15, spectral_radius: float = 0.95, seed=None):
        self.nonzero, self.spectral_radius, self.seed = int(nonzero), float(spectral_radius), seed
        # Two draws (values and which columns stay): distinct seeds, or two default seeds when unseeded.
        second = None if seed is None else seed + 1
        self._values = keras.initializers.RandomNormal(stddev=1.0, seed=seed)
        self._columns = keras.initializers.RandomUniform(0.0, 1.0, seed=second)

    def __call__(self, shape, dtype=None):
        rows, columns = shape
        if rows != columns or not 1 <= self.nonzero <= columns:
            raise ValueError(
                "SparseSpectral needs a square kernel and 1 ≤ nonzero ≤ its size. "
                f"Received: shape={tuple(shape)}, nonzero={self.nonzero}"
            )
        values = keras.ops.convert_to_numpy(self._values(shape, "float32")).astype(np.float64)
        ranks = np.argsort(np.argsort(keras.ops.convert_to_numpy(self._columns(shape, "float32")), axis=1), axis=1)
        sparse = np.where(ranks < self.nonzero, values, 0.0)
        radius = np.abs(np.linalg.eigvals(sparse)).max()
        # A draw with every eigenvalue zero (possible only for tiny `nonzero`) cannot be scaled.
        scaled = sparse * (self.spectral_radius / radius) if radius > 0 else sparse
        return keras.ops.convert_to_tensor(scaled, dtype=dtype or "float32")

    def get_config(self):
        return {"nonzero": self.nonzero, "spectral_radius": self.spectral_radius, "seed": self.seed}
