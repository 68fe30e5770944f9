"""The `model` and `dataset` sections that name your own code: `factory: module:function`, or a
name an installed package registers; both take `args:`, checked against the function's signature."""

from typing import Any, ClassVar

from pydantic import ValidationInfo, field_validator

from keras_stability.config.strict import PositiveCount, Strict
from keras_stability.factories import ENTRY_POINT_GROUPS, check_arguments, registered, resolve_factory


class FactorySection(Strict):
    """Your own model or data: `factory: "module:function"`, called with `args` as keyword arguments."""

    factory: str
    args: dict[str, Any] = {}

    @field_validator("factory")
    @classmethod
    def importable(cls, value):
        resolve_factory(value)
        return value

    @field_validator("args")
    @classmethod
    def fit_the_signature(cls, value, info: ValidationInfo):
        if "factory" in info.data:  # else the factory's own error is the one reported
            check_arguments(resolve_factory(info.data["factory"]), info.data["factory"], cls.PASSED, value)
        return value


class FactoryModelConfig(FactorySection):
    """`factory(input_shape=..., num_classes=..., seed=..., **args)` returns an uncompiled Keras model."""

    PASSED: ClassVar[tuple[str, ...]] = ("input_shape", "num_classes", "seed")


class FactoryDatasetConfig(FactorySection):
    """`factory(seed=..., **args)` returns the splits; `train_size` truncates the training split."""

    PASSED: ClassVar[tuple[str, ...]] = ("seed",)

    train_size: PositiveCount | None = None


class RegisteredSection(Strict):
    """A model or dataset that an installed package registers under `name`, with `args` for it."""

    name: str
    args: dict[str, Any] = {}

    @field_validator("args")
    @classmethod
    def fit_the_signature(cls, value, info: ValidationInfo):
        entry = registered(cls.GROUP).get(info.data.get("name"))
        if entry is not None:  # else the name's own error is the one reported
            check_arguments(resolve_factory(entry.value), entry.value, cls.PASSED, value)
        return value


class RegisteredModelConfig(RegisteredSection):
    """A model registered in the entry point group `keras_stability.models`."""

    GROUP: ClassVar[str] = ENTRY_POINT_GROUPS["model"]
    PASSED: ClassVar[tuple[str, ...]] = FactoryModelConfig.PASSED


class RegisteredDatasetConfig(RegisteredSection):
    """A dataset registered in the entry point group `keras_stability.datasets`."""

    GROUP: ClassVar[str] = ENTRY_POINT_GROUPS["dataset"]
    PASSED: ClassVar[tuple[str, ...]] = FactoryDatasetConfig.PASSED

    train_size: PositiveCount | None = None
