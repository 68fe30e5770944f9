"""The model zoo: the seed documents' architectures by name, built from a model section.

The image models take 28×28×1 inputs and give 10 logits; `rnn` takes sequences of 2 features and gives
one value (the adding problem). A model section naming a factory builds through `keras_stability.factories`.
"""

import keras

from keras_stability.factories import build_factory_model, is_factory_section

# Unseeded on purpose: `keras.utils.set_random_seed` makes them reproducible, and a fixed seed per
# initializer would give every layer of one shape the same weights.
INITIALIZERS = {
    "glorot_uniform": lambda config: keras.initializers.GlorotUniform(),
    "xavier": lambda config: keras.initializers.GlorotUniform(),
    "glorot_normal": lambda config: keras.initializers.GlorotNormal(),
    "he_normal": lambda config: keras.initializers.HeNormal(),
    "he_uniform": lambda config: keras.initializers.HeUniform(),
    "random_normal": lambda config: keras.initializers.RandomNormal(stddev=config.init_stddev),
}


def layer_options(config):
    regularizer = keras.regularizers.L1L2(config.l1, config.l2) if (config.l1 or config.l2) else None
    return dict(kernel_initializer=INITIALIZERS[config.initializer](config), kernel_regularizer=regularizer)


def dense_stack(layers, widths, config):
    for width in widths:
        layers.append(keras.layers.Dense(width, activation=config.activation, **layer_options(config)))
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout))
    return layers


def classifier_head(layers, config):
    layers.append(keras.layers.Dense(10, name="logits", **layer_options(config)))
    return keras.Sequential(layers)


def mlp(config):
    """MLP 784-hidden-10 (doc 002: hidden [128, 64])."""
    layers = [keras.Input((28, 28, 1)), keras.layers.Flatten()]
    return classifier_head(dense_stack(layers, config.hidden, config), config)


def deep_mlp(config):
    """`depth` hidden layers of `width` units, for explosion studies."""
    layers = [keras.Input((28, 28, 1)), keras.layers.Flatten()]
    return classifier_head(dense_stack(layers, [config.width] * config.depth, config), config)


def conv_stack(filters_per_block, kernel_size, config):
    layers = [keras.Input((28, 28, 1))]
    for block in filters_per_block:
        for filters in block:
            layers.append(
                keras.layers.Conv2D(filters, kernel_size, padding="same", activation=config.activation, **layer_options(config))
            )
        layers.append(keras.layers.MaxPooling2D(2))
    layers.append(keras.layers.Flatten())
    return layers


def cnn3(config):
    """Doc 000: conv32 → pool → conv64 → pool → conv128 → pool → fc512 → 10 (3×3 kernels, 28×28×1)."""
    layers = conv_stack([[32], [64], [128]], 3, config)
    return classifier_head(dense_stack(layers, [512], config), config)


def cnn4(config):
    """Doc 004: conv64, conv64 → pool → conv128, conv128 → pool → fc512 → 10."""
    layers = conv_stack([[64, 64], [128, 128]], 3, config)
    return classifier_head(dense_stack(layers, [512], config), config)


def fmnist_2c2d(config):
    """DeepOBS fmnist_2c2d: conv32 5×5 → pool → conv64 5×5 → pool → fc1024 → 10."""
    layers = conv_stack([[32], [64]], 5, config)
    return classifier_head(dense_stack(layers, [1024], config), config)


def rnn(config):
    """One recurrent layer (`cell`: simple_rnn or lstm) with `units`, then a linear output (adding problem)."""
    cell = keras.layers.SimpleRNN if config.cell == "simple_rnn" else keras.layers.LSTM
    options = layer_options(config)
    return keras.Sequential(
        [
            keras.Input((None, 2)),
            cell(config.units, activation=config.activation if config.cell == "simple_rnn" else "tanh", **options),
            keras.layers.Dense(1, kernel_initializer=options["kernel_initializer"]),
        ]
    )


MODELS = {"mlp": mlp, "deep_mlp": deep_mlp, "cnn3": cnn3, "cnn4": cnn4, "fmnist_2c2d": fmnist_2c2d, "rnn": rnn}


def get_model(name):
    if name not in MODELS:
        raise ValueError(f"Unrecognized model: {name!r}. Known: {', '.join(MODELS)}.")
    return MODELS[name]


def build_model(config, task=None, seed=None):
    """A new Keras model for `config` (a model section); call `keras.utils.set_random_seed` first.

    A factory section needs the `Task` it trains on (its input shape and classes) and the run seed.
    """
    if is_factory_section(config):
        return build_factory_model(config, task, seed)
    return get_model(config.name)(config)
