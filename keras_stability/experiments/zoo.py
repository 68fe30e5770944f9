"""The model zoo: the seed documents' architectures by name, built from a model section.

The image models take the task's input shape (28×28×1 unless the dataset resizes its images) and give
one logit per class of the task (10 when no task is given); `rnn` takes sequences of 2 features and gives one value (the adding problem); `embedding_bag`
takes sequences of token ids. A model section naming a factory builds through `keras_stability.factories`.
"""

import keras

from keras_stability.experiments.sparse_init import SparseSpectral
from keras_stability.experiments.torch_init import TorchBiasUniform, torch_kernel_uniform
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
    # Redraws values beyond two standard deviations, as TF1's truncated_normal_initializer (DeepOBS) does.
    "truncated_normal": lambda config: keras.initializers.TruncatedNormal(stddev=config.init_stddev),
    # PyTorch's nn.Linear / nn.Conv2d default (kaiming_uniform_, a=√5): U(±1/√fan_in).
    "torch_default": lambda config: torch_kernel_uniform(),
}
# Each takes the model section and the layer's kernel fan-in, which only `torch_default` reads.
BIAS_INITIALIZERS = {
    "zeros": lambda config, fan_in: keras.initializers.Zeros(),
    # Doc 002's `tf.random_normal([n])` biases: the same stddev as its weights.
    "random_normal": lambda config, fan_in: keras.initializers.RandomNormal(stddev=config.init_stddev),
    "constant": lambda config, fan_in: keras.initializers.Constant(config.bias_value),
    # PyTorch's default bias: U(±1/√fan_in) with the kernel's fan-in, which Keras does not pass to it.
    "torch_default": lambda config, fan_in: TorchBiasUniform(fan_in),
}
DEFAULT_CLASSES = 10  # without a task: the digit and Fashion-MNIST datasets
DEFAULT_IMAGE_SHAPE = (28, 28, 1)


def layer_options(config, fan_in):
    """A layer's initializers and regulariser; `fan_in` is its kernel's (inputs · receptive field)."""
    regularizer = keras.regularizers.L1L2(config.l1, config.l2) if (config.l1 or config.l2) else None
    return dict(
        kernel_initializer=INITIALIZERS[config.initializer](config),
        bias_initializer=BIAS_INITIALIZERS[config.bias_initializer](config, fan_in),
        kernel_regularizer=regularizer,
    )


def output_shape(layers):
    """The shape `layers` (a `keras.Input`, then unbuilt layers) give, without building them: building
    would draw weights and shift every later draw of the seeded generator."""
    shape = tuple(layers[0].shape)
    for layer in layers[1:]:
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def dense_stack(layers, widths, config):
    for width in widths:
        fan_in = output_shape(layers)[-1]
        layers.append(keras.layers.Dense(width, activation=config.activation, **layer_options(config, fan_in)))
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout))
    return layers


def classifier_head(layers, config, classes):
    options = layer_options(config, output_shape(layers)[-1])
    layers.append(keras.layers.Dense(classes, name="logits", **options))
    return keras.Sequential(layers)


def mlp(config, classes, input_shape=DEFAULT_IMAGE_SHAPE):
    """MLP 784-hidden-classes (doc 002: hidden [128, 64])."""
    layers = [keras.Input(input_shape), keras.layers.Flatten()]
    return classifier_head(dense_stack(layers, config.hidden, config), config, classes)


def deep_mlp(config, classes, input_shape=DEFAULT_IMAGE_SHAPE):
    """`depth` hidden layers of `width` units, for explosion studies."""
    layers = [keras.Input(input_shape), keras.layers.Flatten()]
    return classifier_head(dense_stack(layers, [config.width] * config.depth, config), config, classes)


def conv_stack(filters_per_block, kernel_size, config, input_shape):
    layers = [keras.Input(input_shape)]
    for block in filters_per_block:
        for filters in block:
            fan_in = output_shape(layers)[-1] * kernel_size * kernel_size
            layers.append(
                keras.layers.Conv2D(
                    filters, kernel_size, padding="same", activation=config.activation, **layer_options(config, fan_in)
                )
            )
        layers.append(keras.layers.MaxPooling2D(2))
    layers.append(keras.layers.Flatten())
    return layers


def cnn3(config, classes, input_shape=DEFAULT_IMAGE_SHAPE):
    """Doc 000: conv32 → pool → conv64 → pool → conv128 → pool → fc512 → classes (3×3 kernels, 28×28×1)."""
    layers = conv_stack([[32], [64], [128]], 3, config, input_shape)
    return classifier_head(dense_stack(layers, [512], config), config, classes)


def cnn4(config, classes, input_shape=DEFAULT_IMAGE_SHAPE):
    """conv64, conv64 → pool → conv128, conv128 → pool → fc512 → classes (the first edition's doc-004 CNN)."""
    layers = conv_stack([[64, 64], [128, 128]], 3, config, input_shape)
    return classifier_head(dense_stack(layers, [512], config), config, classes)


def cnn4_pool4(config, classes, input_shape=DEFAULT_IMAGE_SHAPE):
    """Doc 004's own CNN: conv64 → pool → conv64 → pool → conv128 → pool → conv128 → pool → fc512 →
    classes (2 in the document), 3×3 kernels. Its `128 * 4 * 4` flatten implies 64×64 images (the
    dataset's `image_size: 64`: fc512 then reads 4×4×128); on 28×28 the four 2×2 pools give 14, 7, 3,
    1, so fc512 reads 128 features."""
    layers = conv_stack([[64], [64], [128], [128]], 3, config, input_shape)
    return classifier_head(dense_stack(layers, [512], config), config, classes)


def fmnist_2c2d(config, classes, input_shape=DEFAULT_IMAGE_SHAPE):
    """DeepOBS fmnist_2c2d: conv32 5×5 → pool → conv64 5×5 → pool → fc1024 → classes. DeepOBS's own
    initialisation is `initializer: truncated_normal, init_stddev: 0.05, bias_initializer: constant,
    bias_value: 0.05` on every layer."""
    layers = conv_stack([[32], [64]], 5, config, input_shape)
    return classifier_head(dense_stack(layers, [1024], config), config, classes)


RECURRENT_INITIALIZERS = {
    "orthogonal": lambda config: keras.initializers.Orthogonal(),
    "random_normal": lambda config: keras.initializers.RandomNormal(stddev=config.recurrent_stddev),
    # Pascanu et al.'s "smart tanh": `recurrent_nonzero` Gaussian entries a row, at `spectral_radius`.
    "sparse_spectral": lambda config: SparseSpectral(config.recurrent_nonzero, config.spectral_radius),
}


def rnn(config, classes, input_shape=None):
    """One recurrent layer (`cell`: simple_rnn or lstm) with `units`, then a linear output (adding problem)."""
    cell = keras.layers.SimpleRNN if config.cell == "simple_rnn" else keras.layers.LSTM
    options = layer_options(config, 2)  # the schema refuses torch_default here: PyTorch's RNN differs
    recurrent = RECURRENT_INITIALIZERS[config.recurrent_initializer](config)
    activation = config.activation if config.cell == "simple_rnn" else "tanh"
    return keras.Sequential(
        [
            keras.Input((None, 2)),
            cell(config.units, activation=activation, recurrent_initializer=recurrent, **options),
            keras.layers.Dense(1, kernel_initializer=options["kernel_initializer"]),
        ]
    )


def embedding_bag(config, classes, input_shape=None):
    """Token ids → Embedding(`vocabulary`, `embedding_dim`) → mean over the sequence → classes.

    Its embedding gradient is `tf.IndexedSlices` with one row per token, so a sequence that repeats an
    id repeats a row: the sparse case for clipping (the library sums repeated rows before any norm)."""
    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(config.vocabulary, config.embedding_dim, name="embedding"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(classes, name="logits", **layer_options(config, config.embedding_dim)),
        ]
    )


MODELS = {
    "mlp": mlp,
    "deep_mlp": deep_mlp,
    "cnn3": cnn3,
    "cnn4": cnn4,
    "cnn4_pool4": cnn4_pool4,
    "fmnist_2c2d": fmnist_2c2d,
    "rnn": rnn,
    "embedding_bag": embedding_bag,
}


def get_model(name):
    if name not in MODELS:
        raise ValueError(f"Unrecognized model: {name!r}. Known: {', '.join(MODELS)}.")
    return MODELS[name]


def build_model(config, task=None, seed=None):
    """A new Keras model for `config` (a model section); call `keras.utils.set_random_seed` first.

    A factory section needs the `Task` it trains on (its input shape and classes) and the run seed; a
    zoo classifier takes its number of outputs from the task (10 without one), and an image model its
    input shape (28×28×1 without one; the recurrent and token models read sequences of any length).
    """
    if is_factory_section(config):
        return build_factory_model(config, task, seed)
    classes = getattr(task, "num_classes", None) or DEFAULT_CLASSES
    input_shape = getattr(task, "input_shape", None) or DEFAULT_IMAGE_SHAPE
    return get_model(config.name)(config, classes, tuple(input_shape))
