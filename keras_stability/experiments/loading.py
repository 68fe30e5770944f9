"""Reading experiment files: YAML with line numbers, variants, `--set` overrides, one-line errors.

Every problem becomes one line `FILE:LINE:COL: key.path: what is wrong (did you mean …?)`, collected
into a `ConfigError`; the command line prints them and exits with status 2.
"""

import copy
import difflib
import re
import types
import typing

import pydantic
import yaml

from keras_stability.experiments.schema import TRANSFORM_SPECS, ExperimentFile, RunConfig

BASE_VARIANT = "base"


class ConfigError(ValueError):
    """Invalid experiment input; `lines` holds one formatted message per problem."""

    def __init__(self, lines):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


class Experiment(typing.NamedTuple):
    """A validated experiment file: its resolved runs' configs by variant name, in file order.

    `sources` keeps each variant's merged, unvalidated mapping, from which a search resolves trials.
    """

    path: str
    name: str
    baseline: str
    variants: dict
    search: object = None
    sources: dict = {}
    sweep: object = None

    def runs(self):
        """(variant, seed, config) for every run of the experiment."""
        return [(variant, seed, config) for variant, config in self.variants.items() for seed in config.seeds]


def compose_marks(node, path=(), marks=None, source="file"):
    """Maps each key path to the (line, column) of its key and of its value; refuses duplicate keys."""
    marks = {} if marks is None else marks
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            location = (source, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in seen:
                raise ConfigError([f"{location[0]}:{location[1]}:{location[2]}: {'.'.join(map(str, path + (key,)))}: duplicate key"])
            seen.add(key)
            value_location = (source, value_node.start_mark.line + 1, value_node.start_mark.column + 1)
            marks[path + (key,)] = (location, value_location)
            compose_marks(value_node, path + (key,), marks, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            location = (source, item.start_mark.line + 1, item.start_mark.column + 1)
            marks[path + (index,)] = (location, location)
            compose_marks(item, path + (index,), marks, source)
    return marks


def read_yaml(path):
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise ConfigError([f"{path}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {error.problem}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1:1: an experiment file is a mapping of keys (name, seeds, model, ...)"])
    marks = compose_marks(node, source=path)
    marks[()] = ((path, 1, 1), (path, 1, 1))
    return data, marks


def unwrap(annotation, value):
    """The pydantic model class an annotation stands for, given the value it holds (or None)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return unwrap(typing.get_args(annotation)[0], value)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if isinstance(value, dict) and value.get("name") in TRANSFORM_SPECS and len(options) > 1:
            return TRANSFORM_SPECS[value["name"]]
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
            current = unwrap(typing.get_args(current)[0], value[part] if isinstance(value, list) and part < len(value) else None)
            value = value[part] if isinstance(value, list) and part < len(value) else None
            continue
        field = current.model_fields.get(part)
        value = value.get(part) if isinstance(value, dict) else None
        current = None if field is None else unwrap(field.annotation, value)
    return list(current.model_fields) if current is not None and hasattr(current, "model_fields") else []


def suggestion(word, candidates):
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def clean_path(loc):
    """Pydantic's error location without the discriminator tags it inserts after list indices."""
    path = []
    for part in loc:
        if isinstance(part, str) and path and isinstance(path[-1], int) and part in TRANSFORM_SPECS:
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        path.append(part)
    return tuple(path)


def describe(error, schema, data, path):
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return f"unknown key{suggestion(path[-1], allowed_keys(schema, data, path[:-1]))}"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        return f"unknown name {error['input']!r}, expected one of {', '.join(expected)}{suggestion(error['input'], expected)}"
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']*)'", error["ctx"]["expected_tags"])
        return f"unknown transform {error['ctx']['tag']!r}, expected one of {', '.join(tags)}{suggestion(error['ctx']['tag'], tags)}"
    if kind == "union_tag_not_found":
        return f"a transform needs `name:` (one of {', '.join(TRANSFORM_SPECS)})"
    return message[len("Value error, "):] if message.startswith("Value error, ") else message


def locate(path, marks_in_order, extra):
    """The most precise known location of `path`: the first mark table that has it or a parent."""
    for prefix_length in range(len(path), -1, -1):
        for prefix, marks in marks_in_order:
            key = prefix + path[:prefix_length]
            if key in marks:
                key_mark, value_mark = marks[key]
                source, line, column = key_mark if extra and prefix_length == len(path) else value_mark
                return source if line is None else f"{source}:{line}:{column}"
    return "(experiment)"


def validate(schema, data, marks_in_order):
    try:
        return schema.model_validate(data)
    except pydantic.ValidationError as exc:
        lines = []
        for error in exc.errors():
            path = clean_path(error["loc"])
            where = locate(path, marks_in_order, extra=error["type"] == "extra_forbidden")
            dotted = ".".join(map(str, path)) or "(top level)"
            lines.append(f"{where}: {dotted}: {describe(error, schema, data, path)}")
        raise ConfigError(lines) from None


def merge(base, override):
    """`base` with `override` deep-merged in: mappings merge, everything else replaces."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def parse_override(text):
    """`"optimizer.learning_rate=0.1"` → `(("optimizer", "learning_rate"), 0.1)`; values are YAML."""
    key, separator, value = text.partition("=")
    if not separator or not key or not re.fullmatch(r"[A-Za-z_]\w*(\.(\w+))*", key):
        raise ConfigError([f"--set {text}: expected KEY.PATH=VALUE, e.g. optimizer.learning_rate=0.1"])
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return tuple(key.split(".")), parsed


def apply_overrides(data, overrides):
    """`data` with each (path, value) set; a numeric path part indexes an existing list."""
    data = copy.deepcopy(data)
    for path, value in overrides:
        target = data
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(target, list) and str(part).isdigit() and int(part) < len(target):
                part = int(part)
            elif isinstance(target, list):
                raise ConfigError([f"{'.'.join(map(str, path))}: {'.'.join(map(str, path[:depth]))} has no item {part}"])
            elif not isinstance(target, dict):
                raise ConfigError([f"{'.'.join(map(str, path))}: {'.'.join(map(str, path[:depth]))} is not a mapping"])
            if last:
                target[part] = value
            else:
                if isinstance(target, dict) and not isinstance(target.get(part), (dict, list)):
                    target[part] = {}
                target = target[part]
    return data


def override_marks(overrides):
    marks = {}
    for text, (path, _) in overrides:
        location = (f"--set {text}", None, None)
        for length in range(1, len(path) + 1):
            marks.setdefault(path[:length], (location, location))
    return marks


def load_experiment(path, overrides=()):
    """Reads and validates an experiment file; returns an `Experiment` or raises `ConfigError`.

    Args:
        path: the YAML file.
        overrides: `--set` strings, applied to every variant last.
    """
    data, marks = read_yaml(path)
    parsed_overrides = [(text, parse_override(text)) for text in overrides]
    set_marks = override_marks(parsed_overrides)
    values = [value for _, value in parsed_overrides]
    top = validate(ExperimentFile, apply_overrides(data, values), [((), set_marks), ((), marks)])
    base = {k: v for k, v in data.items() if k != "variants"}
    base = {k: v for k, v in base.items() if k not in ("search", "sweep")}
    variants, sources = {}, {}
    errors = []
    for variant, override in (data.get("variants") or {BASE_VARIANT: {}}).items():
        merged = apply_overrides(merge(base, override or {}), values)
        sources[variant] = merged
        tables = [((), set_marks), (("variants", variant), marks), ((), marks)]
        try:
            variants[variant] = validate(RunConfig, merged, tables)
        except ConfigError as error:
            errors.extend(line.replace(": ", f": [variant {variant}] ", 1) for line in error.lines)
    baseline = top.baseline or next(iter(variants), BASE_VARIANT)
    if top.baseline is not None and top.baseline not in variants and not errors:
        where = locate(("baseline",), [((), marks)], extra=False)
        errors.append(f"{where}: baseline: no variant named {top.baseline!r}{suggestion(top.baseline, variants)}")
    if top.search is not None and not errors:
        errors += check_search_space(top.search, baseline, sources, marks)
    if errors:
        raise ConfigError(sorted(set(errors), key=errors.index))
    if top.sweep is not None:
        from keras_stability.experiments.sweep import expand_sweep  # sweep.py builds on this module

        variants, baseline = expand_sweep(top.sweep, baseline, variants, sources, marks)
    return Experiment(str(path), top.name, baseline, variants, top.search, sources, top.sweep)


def check_search_space(search, baseline, sources, marks):
    """Every searched key must name a real setting: try its first grid point or its low end."""
    variant = search.variant or baseline
    if variant not in sources:
        where = locate(("search", "variant"), [((), marks)], extra=False)
        return [f"{where}: search.variant: no variant named {variant!r}{suggestion(variant, sources)}"]
    errors = []
    for key, spec in search.space.items():
        sample = (spec.grid() or [spec.low])[0]
        try:
            trial = apply_overrides(sources[variant], [(tuple(key.split(".")), sample)])
            validate(RunConfig, trial, [((), {})])
        except ConfigError as error:
            where = locate(("search", "space", key), [((), marks)], extra=True)
            detail = error.lines[0].split(": ", 1)[-1]
            errors.append(f"{where}: search.space.{key}: {detail}")
    return errors
