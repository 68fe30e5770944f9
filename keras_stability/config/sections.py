"""The `model` and `dataset` sections of an experiment file: tagged unions keyed on `name`.

Each zoo model and built-in dataset declares only the keys it uses, so a key it would ignore (`units`
on an mlp, `train_size` on the adding problem) is an error. Besides the built-in names a section may
name an importable factory (`factory: "mypkg.models:build"`) or a name that an installed package
registers through the entry point groups `keras_stability.models` / `keras_stability.datasets`; both
take `args:`, passed to the factory as keyword arguments (the contract is in `factories`).

The built-in names are the keys of `MODEL_SPECS` and `DATASET_SPECS`; the zoo's `MODELS` and the
dataset registry's `DATASETS` hold the same names in the same order (tests/config/test_schema.py ties them:
the registries import TensorFlow, which validating a file must not).
"""

from typing import Annotated, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PositiveFloat,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from keras_stability.config.factory_sections import (
    FactoryDatasetConfig,
    FactoryModelConfig,
    RegisteredDatasetConfig,
    RegisteredModelConfig,
)
from keras_stability.config.strict import NonNegativeFloat, PositiveCount, Strict, count
from keras_stability.factories import ENTRY_POINT_GROUPS, registered

FACTORY, REGISTERED, UNKNOWN = "factory", "registered", "unknown"
NOT_NAMES = (FACTORY, REGISTERED, UNKNOWN)  # union tags that are not names a file can use


class ZooModel(Strict):
    """Options every zoo model takes: its layers' activation, initialisation and regularisation.

    `init_stddev` is the stddev of the `random_normal` and `truncated_normal` initialisers, for kernels
    and for `bias_initializer: random_normal`; `bias_value` is the constant of `bias_initializer: constant`.
    `torch_default` is PyTorch's nn.Linear / nn.Conv2d default: U(±1/√fan_in) for kernels and biases.
    """

    name: str
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    initializer: Literal[
        "glorot_uniform",
        "glorot_normal",
        "xavier",
        "he_normal",
        "he_uniform",
        "random_normal",
        "truncated_normal",
        "torch_default",
    ] = "glorot_uniform"
    init_stddev: PositiveFloat = 0.05
    bias_initializer: Literal["zeros", "random_normal", "constant", "torch_default"] = "zeros"
    bias_value: float = 0.0
    l1: NonNegativeFloat = 0.0
    l2: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def bias_value_needs_constant(self):
        if self.bias_value and self.bias_initializer != "constant":
            raise ValueError(
                f"`bias_value` applies to `bias_initializer: constant` only. Received: bias_value={self.bias_value}, "
                f"bias_initializer={self.bias_initializer!r}; set bias_initializer: constant or drop bias_value"
            )
        return self


Dropout = Annotated[float, Field(ge=0, lt=1)]


class MlpConfig(ZooModel):
    name: Literal["mlp"] = "mlp"
    hidden: list[PositiveCount] = [128, 64]
    dropout: Dropout = 0.0


class DeepMlpConfig(ZooModel):
    name: Literal["deep_mlp"] = "deep_mlp"
    depth: PositiveCount = 8
    width: PositiveCount = 128
    dropout: Dropout = 0.0


class Cnn3Config(ZooModel):
    name: Literal["cnn3"] = "cnn3"
    dropout: Dropout = 0.0


class Cnn4Config(ZooModel):
    name: Literal["cnn4"] = "cnn4"
    dropout: Dropout = 0.0


class Cnn4Pool4Config(ZooModel):
    name: Literal["cnn4_pool4"] = "cnn4_pool4"
    dropout: Dropout = 0.0


class Fmnist2c2dConfig(ZooModel):
    name: Literal["fmnist_2c2d"] = "fmnist_2c2d"
    dropout: Dropout = 0.0


class RnnConfig(ZooModel):
    """`activation` applies to `simple_rnn`; an LSTM keeps its tanh. `recurrent_stddev` is the stddev of
    `recurrent_initializer: random_normal`; `sparse_spectral` (Pascanu et al.'s "smart tanh") keeps
    `recurrent_nonzero` Gaussian entries a row and scales the kernel to `spectral_radius`."""

    name: Literal["rnn"] = "rnn"
    cell: Literal["simple_rnn", "lstm"] = "simple_rnn"
    units: PositiveCount = 64
    recurrent_initializer: Literal["orthogonal", "random_normal", "sparse_spectral"] = "orthogonal"
    recurrent_stddev: PositiveFloat = 0.1
    recurrent_nonzero: PositiveCount = 15
    spectral_radius: PositiveFloat = 0.95

    @model_validator(mode="after")
    def sparse_rows_fit(self):
        if self.recurrent_initializer == "sparse_spectral" and self.recurrent_nonzero > self.units:
            raise ValueError(
                f"`recurrent_nonzero` entries a row cannot exceed `units`. Received: "
                f"recurrent_nonzero={self.recurrent_nonzero}, units={self.units}"
            )
        return self

    @model_validator(mode="after")
    def not_torch_default(self):
        # PyTorch's nn.RNN draws every weight and bias from U(±1/√hidden_size): not its Linear's rule.
        if "torch_default" in (self.initializer, self.bias_initializer):
            raise ValueError(
                "`torch_default` is PyTorch's nn.Linear / nn.Conv2d initialisation, not its nn.RNN's. Received: "
                f"initializer={self.initializer!r}, bias_initializer={self.bias_initializer!r} on an rnn"
            )
        return self


class EmbeddingBagConfig(ZooModel):
    """Token ids → embedding → mean → logits; `vocabulary` must cover the dataset's ids."""

    name: Literal["embedding_bag"] = "embedding_bag"
    vocabulary: PositiveCount = 1000
    embedding_dim: PositiveCount = 16


ValidationFraction = Annotated[float, Field(gt=0, lt=1)]


def distinct_classes(classes):
    if len(set(classes)) != len(classes):
        raise ValueError(f"`classes` must differ. Received: {classes}")
    return classes


# A subset of the ten classes, relabelled 0, 1, ... in the order given (doc 004's two-class task).
Classes = Annotated[list[Annotated[int, Field(ge=0, le=9)]], Field(min_length=2), AfterValidator(distinct_classes)]


def positive_std(pair: list[float]) -> list[float]:
    if pair[1] <= 0:
        raise ValueError(f"`normalize` is [mean, std] with std > 0. Received: {pair}")
    return pair


# torchvision's `Normalize((mean,), (std,))` after the [0, 1] scaling: (x − mean) / std. A YAML list,
# as every other sequence in a file (strict validation turns no list into a tuple).
Normalize = Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(positive_std)] | None
# torchvision's bilinear `Resize(N)`: the 28×28 digits become N×N (doc 004's CNN implies 64).
ImageSize = Annotated[int, Field(ge=8, le=512)] | None


class MnistSmallConfig(Strict):
    """`normalize: [mean, std]` and `image_size: N` preprocess the images as torchvision's `Normalize`
    and bilinear `Resize` do (PyTorch documents' transforms), resizing first."""

    name: Literal["mnist_small"] = "mnist_small"
    validation_fraction: ValidationFraction = 0.1
    train_size: PositiveCount | None = None
    classes: Classes | None = None
    normalize: Normalize = None
    image_size: ImageSize = None


class MnistConfig(Strict):
    """`path` is a directory of the four IDX files (else the environment or tensorflow-datasets);
    `normalize` and `image_size` as on `mnist_small`."""

    name: Literal["mnist"] = "mnist"
    path: str | None = None
    validation_fraction: ValidationFraction = 0.1
    train_size: PositiveCount | None = None
    classes: Classes | None = None
    normalize: Normalize = None
    image_size: ImageSize = None


class FashionMnistConfig(MnistConfig):
    name: Literal["fashion_mnist"] = "fashion_mnist"


class AddingProblemConfig(Strict):
    """Its size is `adding_samples` (split 10 % test, then `validation_fraction`), not `train_size`;
    `adding_task` places the markers and sets the target as Hochreiter & Schmidhuber (one marker in
    each half, the sum) or Pascanu et al.'s code (first 10 %, next 40 %; the mean)."""

    name: Literal["adding_problem"] = "adding_problem"
    validation_fraction: ValidationFraction = 0.1
    sequence_length: count(2) = 50
    adding_samples: count(10) = 2000
    adding_task: Literal["hochreiter", "pascanu"] = "hochreiter"


class ZipfTokensConfig(Strict):
    """Sequences of `sequence_length` token ids drawn from a Zipf law over `vocabulary` ids (frequent
    ids repeat within a sequence); the label says whether the sequence's fixed ±1 id signs sum > 0."""

    name: Literal["zipf_tokens"] = "zipf_tokens"
    validation_fraction: ValidationFraction = 0.1
    train_size: PositiveCount | None = None
    vocabulary: count(2) = 1000
    sequence_length: count(1) = 51
    token_samples: count(10) = 5000
    zipf_exponent: Annotated[float, Field(gt=1)] = 1.2


def by_name(*specs):
    return {spec.model_fields["name"].default: spec for spec in specs}


MODEL_SPECS = by_name(
    MlpConfig, DeepMlpConfig, Cnn3Config, Cnn4Config, Cnn4Pool4Config, Fmnist2c2dConfig, RnnConfig, EmbeddingBagConfig
)
DATASET_SPECS = by_name(MnistSmallConfig, MnistConfig, FashionMnistConfig, AddingProblemConfig, ZipfTokensConfig)
DEFAULT_NAMES = {"model": "mlp", "dataset": "mnist_small"}


def known_names(kind):
    """Every name a `kind` ("model" or "dataset") section accepts: built-in, then registered."""
    builtin = MODEL_SPECS if kind == "model" else DATASET_SPECS
    return list(builtin) + [name for name in registered(ENTRY_POINT_GROUPS[kind]) if name not in builtin]


def unknown_name_spec(kind):
    class UnknownName(BaseModel):
        """Stands in for an unknown name, so that the one error reported is the name's."""

        model_config = ConfigDict(extra="ignore")
        name: str

        @field_validator("name")
        @classmethod
        def refused(cls, value):
            raise PydanticCustomError(
                "unknown_name", "unknown name {name}", {"name": value, "expected": known_names(kind)}
            )

    return UnknownName


def section(kind, specs, factory_spec, registered_spec):
    """The tagged union of a `kind` section: built-in names, `factory:`, registered names."""

    def tag(value):
        if isinstance(value, dict):
            if FACTORY in value:
                return FACTORY
            name = value.get("name", DEFAULT_NAMES[kind])
        elif isinstance(value, BaseModel):
            name = getattr(value, "name", None)
            if name is None:
                return FACTORY
        else:
            return None
        if not isinstance(name, str):
            return UNKNOWN  # whose `name: str` says what is wrong (a mapping is not hashable, either)
        if name in specs:
            return name
        return REGISTERED if name in registered(ENTRY_POINT_GROUPS[kind]) else UNKNOWN

    members = [Annotated[spec, Tag(name)] for name, spec in specs.items()]
    members += [Annotated[factory_spec, Tag(FACTORY)], Annotated[registered_spec, Tag(REGISTERED)]]
    members.append(Annotated[unknown_name_spec(kind), Tag(UNKNOWN)])
    return Annotated[Union[tuple(members)], Discriminator(tag)]  # noqa: UP007 (a Union of a computed tuple)


ModelConfig = section("model", MODEL_SPECS, FactoryModelConfig, RegisteredModelConfig)
DatasetConfig = section("dataset", DATASET_SPECS, FactoryDatasetConfig, RegisteredDatasetConfig)


def is_builtin(config):
    """Whether a resolved model or dataset section names a zoo model or built-in dataset."""
    return isinstance(config, (ZooModel, *DATASET_SPECS.values()))
