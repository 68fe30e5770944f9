"""Validating a mapping against the schema, with each error located in its file and explained.

`validate` turns each pydantic error into a `Problem`: where it is (the first mark table that knows
the key or a parent: a `--set` option, the variant, the file's top level), the key path without
pydantic's union tags, and a message that names the allowed keys or names, with "did you mean".
The annotation helpers also serve readers of the schema's tagged unions (`sweep`, `runner`).
"""

import difflib
import re
import types
import typing
from collections.abc import Sequence

import pydantic

from keras_stability.config.schema import ExperimentFile
from keras_stability.config.sections import NOT_NAMES
from keras_stability.config.yaml_files import ConfigError, KeyPath, Location, Marks, Problem
from keras_stability.factories import ENTRY_POINT_GROUPS

__all__ = ["field_annotation", "locate", "suggestion", "tagged_members", "unwrap", "validate"]


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
    if kind.endswith("_type") and isinstance(error.get("input"), str):
        # Validation converts no type to another (`Strict`); say so where a quoted number meets it.
        return f"{message}. Received: the string {error['input']!r}; a string is never converted to another type"
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
