"""Reading experiment files: variants, `--set` overrides, validation with located, one-line errors.

The file is read by `yaml_files` (safe YAML with the location of every key); each validation problem
becomes a `Problem` `FILE:LINE:COL: key.path: what is wrong (did you mean …?)` in a `ConfigError`;
the command line prints them and exits with status 2.
"""

import dataclasses
import types
import typing
from collections.abc import Sequence

from keras_stability.config.overrides import apply_overrides, apply_set_options, merge, override_marks, parse_override
from keras_stability.config.schema import ExperimentFile, RunConfig
from keras_stability.config.sweep import expand_sweep
from keras_stability.config.validation import locate, suggestion, validate
from keras_stability.config.yaml_files import (
    ConfigError,
    Location,
    Marks,
    Problem,
    dotted,
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
