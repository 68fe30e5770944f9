"""Each transform is declared by its factory; the experiment file's spec must say the same thing.

The factory (`keras_stability.transforms.FACTORIES`) is the declaration: its parameters, defaults and
the checks of its class. The spec in `config.schema` validates an experiment file before anything is
built, so it repeats them; these tests tie the two, argument by argument and value by value.
"""

import inspect

import pydantic
import pytest

from keras_stability import transforms
from keras_stability.config.transform_specs import TRANSFORM_SPECS

# Values on either side of every bound the transforms have (0, 1, 100) and a few inside.
PROBES = (-1.0, 0.0, 1e-3, 0.5, 0.97, 1.0, 2.0, 2.5, 100.0, 101.0, -1, 0, 1, 2, 127)


# Factory arguments an experiment file cannot set: `unit_axes` names layers' axes, for models built in
# code; zclip's `eps` only guards a division (the reference's default, never varied in a comparison).
LIBRARY_ONLY = {"adaptive_clip": ("unit_axes",), "zclip": ("eps",)}


def required_example(annotation) -> object:
    return 1 if annotation is int else 1.0


def parameters(name):
    every = inspect.signature(transforms.FACTORIES[name]).parameters
    return {key: parameter for key, parameter in every.items() if key not in LIBRARY_ONLY.get(name, ())}


def spec_fields(name):
    return {key: field for key, field in TRANSFORM_SPECS[name].model_fields.items() if key != "name"}


def test_every_factory_has_a_spec_and_every_spec_a_factory():
    assert set(TRANSFORM_SPECS) == set(transforms.FACTORIES)


@pytest.mark.parametrize("name", sorted(transforms.FACTORIES))
def test_spec_has_the_factorys_arguments_and_defaults(name):
    fields = spec_fields(name)
    assert list(fields) == list(parameters(name))
    for key, parameter in parameters(name).items():
        if parameter.default is inspect.Parameter.empty:
            assert fields[key].is_required(), key
        else:
            default = list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
            assert fields[key].default == default, key


def builds(name, arguments) -> bool:
    try:
        transforms.FACTORIES[name](**arguments)
    except (ValueError, TypeError):
        return False
    return True


def validates(name, arguments) -> bool:
    try:
        TRANSFORM_SPECS[name].model_validate({"name": name, **arguments})
    except pydantic.ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(transforms.FACTORIES))
def test_spec_accepts_exactly_the_numbers_the_factory_accepts(name):
    base = {
        key: required_example(parameter.annotation)
        for key, parameter in parameters(name).items()
        if parameter.default is inspect.Parameter.empty
    }
    numeric = [
        key
        for key, parameter in parameters(name).items()
        if parameter.annotation in (int, float) or parameter.annotation == float | None
    ]
    disagreements = [
        f"{key}={value!r}: spec {'accepts' if validates(name, {**base, key: value}) else 'refuses'}, "
        f"factory {'accepts' if builds(name, {**base, key: value}) else 'refuses'}"
        for key in numeric
        for value in PROBES
        if validates(name, {**base, key: value}) != builds(name, {**base, key: value})
    ]
    assert disagreements == []
