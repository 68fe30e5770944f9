"""The base of every section of an experiment file: strict validation, and bounded counts."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NonNegativeFloat = Annotated[float, Field(ge=0)]
# Every count (epochs, sizes, widths, samples, trials) is at most a billion: far above any real use,
# low enough that a typo such as 1e20 epochs is refused here, not an overflow deep in TensorFlow.
MAX_COUNT = 10**9


def count(minimum: int = 1):
    """An integer count from `minimum` to `MAX_COUNT`."""
    return Annotated[int, Field(ge=minimum, le=MAX_COUNT)]


PositiveCount = Annotated[int, Field(gt=0, le=MAX_COUNT)]


class Strict(BaseModel):
    """Validation is strict by choice, everywhere: no key the section does not declare, no coercion
    between types (`max_norm: "1.0"` is a string, refused; an integer is accepted where a float is
    expected, as YAML writes `1` for 1.0), and no infinite or NaN number (`.inf`, `.nan`, `1e400`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
