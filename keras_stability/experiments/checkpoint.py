"""A run's training state as one `.npz` file: every variable that the next epoch reads.

That is the model's variables (weights and the dropout seed generators' states) and the optimizer's
(iterations, learning rate, slots such as momentum, the non-finite counter, the transform's state);
metrics are left out, since every epoch starts by resetting them. Written atomically, the file
costs about a millisecond for the doc-002 MLP, where `model.save` to a `.keras` archive cost tens.
"""

import io
import zipfile

import keras
import numpy as np

from keras_stability.runs import storage


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that does not fit the model."""


def state_variables(model: keras.Model) -> list:
    """The variables of `model` (a compiled, built `StabilizedModel`) that a checkpoint holds, in a fixed order."""
    return list(model.variables) + list(model.optimizer.variables)


def save(path: str, model: keras.Model) -> None:
    buffer = io.BytesIO()
    variables = state_variables(model)
    np.savez(buffer, *[np.asarray(v.numpy()) for v in variables])
    storage.atomic_write_bytes(path, buffer.getvalue(), durable=False)  # rewritten every epoch


def load(path: str, model: keras.Model) -> None:
    """Assigns the values saved in `path` to the model's state variables.

    Raises:
        CheckpointError: if the file is unreadable or holds other variables than the model has.
    """
    variables = state_variables(model)
    try:
        with np.load(path, allow_pickle=False) as archive:
            count = len(archive.files)
            values = [archive[f"arr_{i}"] for i in range(min(count, len(variables)))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} cannot be read ({type(error).__name__}: {error})") from None
    if count != len(variables):
        raise CheckpointError(f"{path} holds {count} variables; the model has {len(variables)}")
    for variable, value in zip(variables, values):
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(f"{path}: {variable.path} has shape {value.shape}; the model's is {variable.shape}")
    for variable, value in zip(variables, values):
        variable.assign(value.astype(variable.dtype))
