"""Reading experiment files: variants, `--set` overrides, validation with located, one-line errors.

The file is read by `yaml_files` (safe YAML with the location of every key); each validation problem
becomes a `Problem` `FILE:LINE:COL: key.path: what is wrong (did you mean …?)` in a `ConfigError`;
the command line prints them and exits with status 2.
"""

import copy
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence

import pydantic

from keras_stability.experiments.schema import ExperimentFile, RunConfig
from keras_stability.experiments.sections import DEFAULT_NAMES, FACTORY, NOT_NAMES
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
from keras_stability.factories import ENTRY_POINT_GROUPS

__all__ = ["ConfigError", "Experiment", "Location", "Problem", "load_experiment", "read_yaml", "validate"]

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


def tagged_members(annotation):
    """(tag of a value, {tag: model class}) for a discriminated-union annotation, else None.

    Covers both of pydantic's forms: `Field(discriminator="name")` over classes with a `name` literal,
    and `Discriminator(function)` over `Annotated[class, Tag(tag)]` members.
    """
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    inner, *metadata = typing.get_args(annotation)
    if typing.get_origin(inner) not in (typing.Union, types.UnionType):
        return None
    for item in metadata:
        discriminator = item.discriminator if isinstance(item, pydantic.fields.FieldInfo) else item
        if isinstance(discriminator, str):
            members = {typing.get_args(m.model_fields[discriminator].annotation)[0]: m for m in typing.get_args(inner)}
            return (lambda value, key=discriminator: value.get(key) if isinstance(value, dict) else None), members
        if isinstance(discriminator, pydantic.Discriminator):
            members = {}
            for member in typing.get_args(inner):
                spec, *tags = typing.get_args(member)
                members.update({tag.tag: spec for tag in tags if isinstance(tag, pydantic.Tag)})
            return discriminator.discriminator, members
    return None


def field_annotation(field):
    """A field's annotation with the metadata (the discriminator) that pydantic keeps beside it."""
    extra = list(field.metadata) + ([pydantic.Field(discriminator=field.discriminator)] if field.discriminator else [])
    return typing.Annotated[(field.annotation, *extra)] if extra else field.annotation


def unwrap(annotation, value):
    """The pydantic model class an annotation stands for, given the value it holds (or None)."""
    tagged = tagged_members(annotation)
    if tagged is not None:
        tag_of, members = tagged
        return members.get(tag_of(value))
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return unwrap(typing.get_args(annotation)[0], value)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return unwrap(options[0], value) if len(options) == 1 else None
    if origin is list:
        return annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel) else None


def allowed_keys(schema, data, path):
    """The keys the schema allows in the mapping at `path` (for "did you mean")."""
    current, value = schema, data
    for part in path:
        if current is None:
            return []
        if typing.get_origin(current) is list:
            current = unwrap(
                typing.get_args(current)[0], value[part] if isinstance(value, list) and part < len(value) else None
            )
            value = value[part] if isinstance(value, list) and part < len(value) else None
            continue
        field = current.model_fields.get(part)
        value = value.get(part) if isinstance(value, dict) else None
        current = None if field is None else unwrap(field_annotation(field), value)
    return list(current.model_fields) if current is not None and hasattr(current, "model_fields") else []


def suggestion(word, candidates):
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def child_annotation(annotation, part):
    """The annotation one step below `annotation` along a pydantic error location."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return child_annotation(typing.get_args(annotation)[0], part)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return child_annotation(options[0], part) if len(options) == 1 else None
    if origin in (list, dict):
        return typing.get_args(annotation)[-1]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel) and part in annotation.model_fields:
        return field_annotation(annotation.model_fields[part])
    return None


def clean_path(loc):
    """Pydantic's error location without the tags it inserts after each tagged union's position."""
    path, current = [], ExperimentFile
    for part in loc:
        if isinstance(part, str) and (part.startswith("function-") or part == "[key]"):
            continue
        tagged = tagged_members(current)
        if tagged is not None and part in tagged[1]:
            current = tagged[1][part]
            continue
        path.append(part)
        current = child_annotation(current, part)
    return tuple(path)


def union_noun(path):
    """What a tagged union at `path` holds, for messages: `model`, `dataset`, `transform`."""
    named = [part for part in path if isinstance(part, str)]
    noun = named[-1] if named else "value"
    return noun[:-1] if path and isinstance(path[-1], int) and noun.endswith("s") else noun


def describe(error, schema, data, path):
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        allowed = allowed_keys(schema, data, path[:-1])
        close = suggestion(path[-1], allowed)
        return f"unknown key{close}" if close or not allowed else f"unknown key (allowed keys: {', '.join(allowed)})"
    if kind in ("literal_error", "unknown_name"):
        expected = error["ctx"]["expected"]
        expected = re.findall(r"'([^']*)'", expected) if isinstance(expected, str) else expected
        return f"unknown name {error['input']!r}, expected one of {', '.join(expected)}{suggestion(error['input'], expected)}"
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']*)'", error["ctx"]["expected_tags"])
        tag = error["ctx"]["tag"]
        return f"unknown {union_noun(path)} {tag!r}, expected one of {', '.join(tags)}{suggestion(tag, tags)}"
    if kind == "union_tag_not_found":
        names = [tag for tag in tagged_members(field_annotation_at(schema, path))[1] if tag not in NOT_NAMES]
        factory = " or `factory: module:function`" if union_noun(path) in ENTRY_POINT_GROUPS else ""
        return f"a {union_noun(path)} needs `name:` (one of {', '.join(names)}){factory}. Received: {error['input']!r}"
    return message[len("Value error, ") :] if message.startswith("Value error, ") else message


def field_annotation_at(schema, path):
    """The annotation of the field at `path` (a key path through the schema's classes and lists)."""
    current = schema
    for part in path:
        current = child_annotation(current, part)
    return current


def locate(path: KeyPath, marks_in_order: Sequence[tuple[KeyPath, Marks]], extra: bool) -> Location:
    """The most precise known location of `path`: the first mark table that has it or a parent."""
    for prefix_length in range(len(path), -1, -1):
        for prefix, marks in marks_in_order:
            key = prefix + path[:prefix_length]
            if key in marks:
                key_mark, value_mark = marks[key]
                return key_mark if extra and prefix_length == len(path) else value_mark
    return Location("(experiment)")


def validate(schema: type[pydantic.BaseModel], data: object, marks_in_order: Sequence[tuple[KeyPath, Marks]]):
    """`schema.model_validate(data)`, or a `ConfigError` with each pydantic error located and explained."""
    try:
        return schema.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = clean_path(error["loc"])
            where = locate(path, marks_in_order, extra=error["type"] == "extra_forbidden")
            problems.append(Problem(where, path, describe(error, schema, data, path)))
        raise ConfigError(problems) from None


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
