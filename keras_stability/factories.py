"""Your own model and data: factories named in an experiment file or registered by installed packages.

An experiment names them as `model: {factory: "mypkg.models:build", args: {width: 256}}` and
`dataset: {factory: "mypkg.data:load", args: {...}}`, or by a `name:` that a package registers in
the entry point group `keras_stability.models` / `keras_stability.datasets` (the entry point's
value is the same `module:function`). The contract:

- a model factory is called as `build(input_shape=..., num_classes=..., seed=..., **args)`: the shape
  of one input example (a tuple), the number of classes (`None` for a regression task) and the run
  seed; `keras.utils.set_random_seed(seed)` has already been called, so Keras initialisers are
  reproducible as the zoo's are. It returns a new, uncompiled `keras.Model` (the runner compiles it).
  Custom layers need `keras.saving.register_keras_serializable` so that a run can resume.
- a dataset factory is called as `load(seed=..., **args)` and returns a mapping with the keys
  `train`, `validation` and `test`, each an `(x, y)` pair of numpy arrays or a finite `tf.data.Dataset`
  of `(x, y)` (batched or not); an optional `task` ("classification" or "regression") defaults to
  classification for integer labels. Pipelines are read once into memory: the runner trains from
  tensors kept on the device.

The file is checked when it is loaded (the import, the attribute, that it is callable) and the
returned values when the factory is called. `factory_provenance` records what trained a run.
"""

import hashlib
import importlib
import importlib.metadata
import inspect
import reprlib
import sys

ENTRY_POINT_GROUPS = {"model": "keras_stability.models", "dataset": "keras_stability.datasets"}


def registered(group):
    """The entry points of `group` by name, as installed now (read on each call: cheap, never stale)."""
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=group)}


def resolve_factory(text):
    """The callable that `"module:attribute"` names; a `ValueError` says what is wrong and what to do."""
    module_name, separator, attribute = text.partition(":")
    if not separator or not module_name or not attribute:
        raise ValueError(f"a factory is `module:function`, e.g. mypkg.models:build. Received: {text!r}")
    try:
        target = importlib.import_module(module_name)
    except Exception as error:  # an import runs arbitrary code: any error means "cannot import"
        raise ValueError(
            f"cannot import module {module_name!r}: {type(error).__name__}: {error}. Received: {text!r}; "
            "put the module's directory on PYTHONPATH or install its package"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}. Received: {text!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{text!r} is not callable. Received: {described(target)} {reprlib.repr(target)}")
    return target


def check_arguments(factory, text, passed, args):
    """Raises a `ValueError` unless `factory` accepts the keywords `passed` (which the runner gives)
    plus `args` (the file's): a misspelt or missing argument is found by `validate`, not by each run."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # a builtin or C function without a signature: its call will tell
    try:
        signature.bind(**dict.fromkeys(passed), **args)
    except TypeError as error:
        raise ValueError(
            f"the arguments do not fit {text}{signature}: {error}. Received: args={args!r}; "
            f"the runner passes {', '.join(passed)} and `args` as keyword arguments"
        ) from None


def factory_text(config, kind):
    """The `module:function` behind a factory or registered section, and the entry point if any."""
    if hasattr(config, "factory"):
        return config.factory, None
    entry = registered(ENTRY_POINT_GROUPS[kind]).get(config.name)
    if entry is None:
        raise ValueError(
            f"no installed package registers the {kind} {config.name!r} any more. "
            f"Received: {kind}.name={config.name!r}; reinstall the package that provided it"
        )
    return entry.value, entry


def factory_of(config, kind):
    """The callable a non-built-in model or dataset section names."""
    return resolve_factory(factory_text(config, kind)[0])


def module_file_hash(module):
    path = getattr(module, "__file__", None)
    if path is None:
        return None, None
    with open(path, "rb") as stream:
        return path, hashlib.sha256(stream.read()).hexdigest()


def distribution_of(module_name, entry):
    """(package name, version) of the distribution that provides `module_name`, or (None, None)."""
    if entry is not None and entry.dist is not None:
        return entry.dist.name, entry.dist.version
    top = module_name.split(".")[0]
    for name in importlib.metadata.packages_distributions().get(top, []):
        return name, importlib.metadata.version(name)
    return None, None


def section_provenance(config, kind):
    text, entry = factory_text(config, kind)
    module_name = text.partition(":")[0]
    resolve_factory(text)  # imports the module, as the run does
    path, digest = module_file_hash(sys.modules[module_name])
    package, version = distribution_of(module_name, entry)
    return {
        "factory": text,
        "entry_point": entry.name if entry is not None else None,
        "module": module_name,
        "module_file": path,
        "module_sha256": digest,
        "package": package,
        "version": version,
    }


def factory_provenance(config):
    """What trained a run beyond this package: for a model or dataset factory, its module, the file's
    SHA-256, and its package and version if installed. `{}` for the zoo's models and built-in data."""
    return {
        f"{kind}_factory": section_provenance(section, kind)
        for kind, section in (("model", config.model), ("dataset", config.dataset))
        if is_factory_section(section)
    }


def is_factory_section(config):
    """Whether a resolved model or dataset section names a factory (`factory:` or a registered name)."""
    return hasattr(config, "args")


def build_factory_model(config, task, seed):
    """The model of a factory section for a `Task`: `build(input_shape, num_classes, seed, **args)`."""
    import keras

    text = factory_text(config, "model")[0]
    model = resolve_factory(text)(input_shape=task.input_shape, num_classes=task.num_classes, seed=seed, **config.args)
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"The model factory {text!r} must return a keras.Model. Received: {described(model)}; "
            "return the model it builds (uncompiled)"
        )
    if not model.built:  # e.g. a Sequential without keras.Input, which `fit` builds from its first batch
        shape = (None, *task.input_shape)
        try:
            model.build(shape)
        except Exception as error:
            raise ValueError(
                f"The model factory {text!r} returned an unbuilt model that cannot be built for inputs of "
                f"shape {shape}: {type(error).__name__}: {error}. Received: {described(model)}; "
                "start it with keras.Input(input_shape)"
            ) from None
    return model


def described(value):
    """`value`'s type for a "Received:" clause: `dict`, `numpy.ndarray`, `keras.src.models.sequential.Sequential`."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
