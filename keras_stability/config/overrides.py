"""Overrides of an experiment's settings: a variant merged into the base, and `--set KEY.PATH=VALUE`.

Both `loading` (variants, `--set`) and `sweep` (each cell sets its grid values) build on these.
"""

import copy
import dataclasses
import re
from collections.abc import Iterable, Sequence

from keras_stability.config.sections import DEFAULT_NAMES, FACTORY
from keras_stability.config.yaml_files import ConfigError, KeyPath, Location, Marks, Problem, dotted, parse_yaml


def deep_merge(base: dict, override: dict) -> dict:
    """`base` with `override` deep-merged in: mappings merge, everything else replaces."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def union_member(kind: str, section: dict) -> str:
    """The member of the `kind` section's tagged union a mapping selects: `factory`, or its `name`."""
    return FACTORY if FACTORY in section else section.get("name", DEFAULT_NAMES[kind])


def switches_member(kind: str, base: object, override: object) -> bool:
    """Whether a variant's `model` / `dataset` override selects another member than the base's (another
    `name`, or `factory` added or removed): the base's keys belong to its member (`hidden` means
    nothing to a `deep_mlp`), so the override replaces the section instead of merging into it."""
    if kind not in DEFAULT_NAMES or not (isinstance(base, dict) and isinstance(override, dict)):
        return False
    selects = "name" in override or FACTORY in override
    return selects and union_member(kind, override) != union_member(kind, base)


def merge(base: dict, override: dict) -> dict:
    """A variant: `base` with `override` deep-merged in, except that a `model` or `dataset` override that
    selects another member of its union (`switches_member`) replaces the base's section."""
    replaced = {key: value for key, value in override.items() if switches_member(key, base.get(key), value)}
    merged = deep_merge(base, {key: value for key, value in override.items() if key not in replaced})
    return {**merged, **copy.deepcopy(replaced)}


def parse_override(text: str) -> tuple[KeyPath, object]:
    """`"optimizer.learning_rate=0.1"` → `(("optimizer", "learning_rate"), 0.1)`; values are YAML."""
    key, separator, value = text.partition("=")
    where = Location(f"--set {text}")
    if not separator or not key or not re.fullmatch(r"[A-Za-z_]\w*(\.(\w+))*", key):
        raise ConfigError([Problem(where, None, "expected KEY.PATH=VALUE, e.g. optimizer.learning_rate=0.1")])
    try:
        parsed = parse_yaml(value, where.source)[0] if value.strip() else None
    except ConfigError:
        parsed = value  # not YAML (or an alias, never expanded): the text itself, as a shell user expects
    return tuple(key.split(".")), parsed


def apply_overrides(data: dict, overrides: Iterable[tuple[KeyPath, object]]) -> dict:
    """`data` with each (path, value) set; a numeric path part indexes an existing list. Setting a
    `model` / `dataset` section's `name` or `factory` to another member replaces the section, as a
    variant's override does (`merge`)."""
    data = copy.deepcopy(data)
    for path, value in overrides:
        if len(path) == 2 and switches_member(path[0], data.get(path[0]), {path[1]: value}):
            data = merge(data, {path[0]: {path[1]: value}})
            continue
        target = data
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(target, list) and str(part).isdigit() and int(part) < len(target):
                part = int(part)
            elif isinstance(target, list):
                raise ConfigError([Problem(None, path, f"{dotted(path[:depth])} has no item {part}")])
            elif not isinstance(target, dict):
                raise ConfigError([Problem(None, path, f"{dotted(path[:depth])} is not a mapping")])
            if last:
                target[part] = value
            else:
                if isinstance(target, dict) and not isinstance(target.get(part), (dict, list)):
                    target[part] = {}
                target = target[part]
    return data


def apply_set_options(data: dict, overrides: Sequence[tuple[str, tuple[KeyPath, object]]]) -> dict:
    """`apply_overrides` for `--set` texts: a problem is placed at the text that caused it."""
    for text, override in overrides:
        try:
            data = apply_overrides(data, [override])
        except ConfigError as error:
            where = Location(f"--set {text}")
            raise ConfigError(dataclasses.replace(problem, where=where) for problem in error.problems) from None
    return data


def override_marks(overrides: Sequence[tuple[str, tuple[KeyPath, object]]]) -> Marks:
    marks = {}
    for text, (path, _) in overrides:
        location = Location(f"--set {text}")
        for length in range(1, len(path) + 1):
            marks.setdefault(path[:length], (location, location))
    return marks
