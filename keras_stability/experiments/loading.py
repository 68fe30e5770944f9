"""Reading experiment files: variants, `--set` overrides, validation with located, one-line errors.

The file is read by `yaml_files` (safe YAML with the location of every key); each validation problem
becomes a `Problem` `FILE:LINE:COL: key.path: what is wrong (did you mean …?)` in a `ConfigError`;
the command line prints them and exits with status 2.
"""

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Sequence

from keras_stability.experiments.schema import ExperimentFile, RunConfig
from keras_stability.experiments.sections import DEFAULT_NAMES, FACTORY
from keras_stability.experiments.validation import locate, suggestion, validate
from keras_stability.experiments.yaml_files import (
    ConfigError,
    KeyPath,
    Location,
    Marks,
    Problem,
    dotted,
    parse_yaml,
    read_yaml,
)

__all__ = ["ConfigError", "Experiment", "Location", "Problem", "load_experiment", "read_yaml"]

BASE_VARIANT = "base"


class Experiment(typing.NamedTuple):
    """A validated experiment file: its resolved runs' configs by variant name, in file order.

    `sources` keeps each variant's merged, unvalidated mapping, from which a search resolves trials.
    """

    path: str
    name: str
    baseline: str
    variants: dict
    search: object = None
    sources: typing.Mapping[str, dict] = types.MappingProxyType({})
    sweep: object = None

    def runs(self):
        """(variant, seed, config) for every run of the experiment."""
        return [(variant, seed, config) for variant, config in self.variants.items() for seed in config.seeds]


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


JIT_COMPILE = ("training", "jit_compile")
# Keras compiles without XLA, and only warns, once op determinism is on, as it is for every run.
NO_XLA_IN_RUNS = (
    "XLA cannot take effect in a run: runs turn on TensorFlow's op determinism (byte-identical results), "
    "under which Keras compiles without XLA; set jit_compile: false (XLA is for the library path, "
    "`compiled_model` with `train_epoch`)"
)


def load_experiment(path: str, overrides: Sequence[str] = ()) -> Experiment:
    """Reads and validates an experiment file; returns an `Experiment` or raises `ConfigError`.

    Args:
        path: the YAML file.
        overrides: `--set` strings, applied to every variant last.
    """
    data, marks = read_yaml(path)
    parsed_overrides = [(text, parse_override(text)) for text in overrides]
    set_marks = override_marks(parsed_overrides)
    top = validate(ExperimentFile, apply_set_options(data, parsed_overrides), [((), set_marks), ((), marks)])
    base = {k: v for k, v in data.items() if k not in ("variants", "search", "sweep")}
    variants, sources = {}, {}
    problems = []
    for variant, override in (data.get("variants") or {BASE_VARIANT: {}}).items():
        merged = apply_set_options(merge(base, override or {}), parsed_overrides)
        sources[variant] = merged
        tables = [((), set_marks), (("variants", variant), marks), ((), marks)]
        try:
            variants[variant] = validate(RunConfig, merged, tables)
        except ConfigError as error:
            problems += [dataclasses.replace(problem, variant=variant) for problem in error.problems]
            continue
        if variants[variant].training.jit_compile:
            where = locate(JIT_COMPILE, tables, extra=False)
            problems.append(Problem(where, JIT_COMPILE, NO_XLA_IN_RUNS, variant))
    baseline = top.baseline or next(iter(variants), BASE_VARIANT)
    if top.baseline is not None and top.baseline not in variants and not problems:
        where = locate(("baseline",), [((), marks)], extra=False)
        problems.append(
            Problem(where, ("baseline",), f"no variant named {top.baseline!r}{suggestion(top.baseline, variants)}")
        )
    if top.search is not None and not problems:
        problems += check_search_space(top.search, baseline, sources, marks)
    if problems:
        raise ConfigError(problems)
    if top.sweep is not None:
        from keras_stability.experiments.sweep import expand_sweep  # sweep.py builds on this module

        variants, baseline = expand_sweep(top.sweep, baseline, variants, sources, marks)
    return Experiment(str(path), top.name, baseline, variants, top.search, sources, top.sweep)


def check_search_space(search, baseline: str, sources: dict, marks: Marks) -> list[Problem]:
    """Every searched key must name a real setting: try its first grid point or its low end."""
    variant = search.variant or baseline
    if variant not in sources:
        where = locate(("search", "variant"), [((), marks)], extra=False)
        return [Problem(where, ("search", "variant"), f"no variant named {variant!r}{suggestion(variant, sources)}")]
    problems = []
    for key, spec in search.space.items():
        sample = (spec.grid() or [spec.low])[0]
        try:
            trial = apply_overrides(sources[variant], [(tuple(key.split(".")), sample)])
            validate(RunConfig, trial, [((), {})])
        except ConfigError as error:
            first = error.problems[0]
            detail = first.message if first.path is None else f"{dotted(first.path)}: {first.message}"
            problems.append(
                Problem(locate(("search", "space", key), [((), marks)], extra=True), ("search", "space", key), detail)
            )
    return problems
