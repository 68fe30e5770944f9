"""Every `>>>` example in the package's docstrings runs and prints what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import keras_stability


def modules_with_examples():
    names = []
    for module in pkgutil.walk_packages(keras_stability.__path__, "keras_stability."):
        spec = importlib.util.find_spec(module.name)
        with open(spec.origin, encoding="utf-8") as stream:
            if ">>>" in stream.read():
                names.append(module.name)
    return names


@pytest.mark.parametrize("name", modules_with_examples())
def test_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
