"""PyTorch's default initialisation of `nn.Linear` and `nn.Conv2d`, as Keras initializers.

PyTorch draws a layer's weights with `kaiming_uniform_(w, a=√5)`: U(−b, b) with
b = gain·√(3/fan_in), gain = √(2/(1 + a²)) = √(1/3), so b = 1/√fan_in; and its bias from U(−1/√fan_in,
1/√fan_in) with the same fan-in (in_features, or in_channels·kh·kw). The kernel needs nothing new: it
is Keras's `VarianceScaling(1/3, "fan_in", "uniform")`, whose bound is √(3·scale/fan_in). The bias
does: Keras passes a bias initializer only the bias's shape, not the kernel's fan-in, so
`TorchBiasUniform` holds the fan-in as its own argument, which the zoo's layer builders compute from
the layer's input shape (`zoo.layer_options`). Being a registered initializer with that argument in
its config, it serializes and re-draws like any Keras initializer (the run cache rebuilds a model
to re-initialise it).
"""

import math

import keras


def torch_kernel_uniform() -> keras.initializers.VarianceScaling:
    """PyTorch's default weight initialisation: U(−1/√fan_in, 1/√fan_in), fan_in the kernel's.

    Returns:
        A Keras `VarianceScaling(scale=1/3, mode="fan_in", distribution="uniform")`.

    References:
        PyTorch `torch.nn.Linear.reset_parameters` and `torch.nn.Conv2d` (`_ConvNd.reset_parameters`):
        `init.kaiming_uniform_(self.weight, a=math.sqrt(5))`.

    >>> float(keras.ops.max(keras.ops.abs(torch_kernel_uniform()((400, 8))))) <= 1 / 400**0.5  # fan_in 400
    True
    """
    # Unseeded, as the zoo's other initializers: `keras.utils.set_random_seed` makes it reproducible.
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


@keras.saving.register_keras_serializable(package="keras_stability")
class TorchBiasUniform(keras.initializers.Initializer):
    """PyTorch's default bias initialisation: U(−1/√fan_in, 1/√fan_in), fan_in the layer's kernel's.

    Args:
        fan_in: the kernel's fan-in (a Dense layer's input width; a Conv2D's in_channels·kh·kw).
        seed: as Keras's initializers: None draws from the global seed (`keras.utils.set_random_seed`).

    References:
        PyTorch `torch.nn.Linear.reset_parameters`: `bound = 1 / math.sqrt(fan_in)` then
        `init.uniform_(self.bias, -bound, bound)`.

    >>> bias = TorchBiasUniform(fan_in=25, seed=0)((1000,))
    >>> bool(keras.ops.max(keras.ops.abs(bias)) <= 0.2)
    True
    """

    def __init__(self, fan_in: int, seed=None):
        if fan_in < 1:
            raise ValueError(f"TorchBiasUniform needs the kernel's fan-in (≥ 1). Received: fan_in={fan_in}")
        self.fan_in = int(fan_in)
        self.seed = seed
        self._uniform = keras.initializers.RandomUniform(-self.bound, self.bound, seed=seed)

    @property
    def bound(self) -> float:
        return 1.0 / math.sqrt(self.fan_in)

    def __call__(self, shape, dtype=None):
        return self._uniform(shape, dtype=dtype)

    def get_config(self):
        return {"fan_in": self.fan_in, "seed": self.seed}
