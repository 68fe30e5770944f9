"""YAML files read safely, with the location of every key; located problems (`Problem`, `ConfigError`).

Every problem is a `Problem` record (where, key path, message), collected into a `ConfigError` and
formatted once as `FILE:LINE:COL: key.path: what is wrong`.

YAML anchors and aliases are refused before they are composed: nine levels of nine aliases fit in
under 1 KB and expand to 9⁹ paths for a validator to walk, and experiment files share settings
through `variants:` and `--set` instead. Nesting is bounded for the same reason (PyYAML composes
recursively).
"""

import dataclasses
import re
from collections.abc import Iterable

import yaml

MAX_NESTING = 64  # experiment files nest 5 deep; PyYAML's composer recurses once per level

KeyPath = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a problem is: a file (with line and column when known), or the `--set` text."""

    source: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}:{self.column}"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where, which key (None when it is not about a key), what."""

    where: Location | None
    path: KeyPath | None
    message: str
    variant: str | None = None

    def __str__(self) -> str:
        key = "" if self.path is None else dotted(self.path)
        if self.variant is not None:
            key = f"[variant {self.variant}] {key}".rstrip()
        return ": ".join(part for part in (str(self.where or ""), key, self.message) if part)


def dotted(path: KeyPath) -> str:
    return ".".join(map(str, path)) or "(top level)"


class ConfigError(ValueError):
    """Invalid experiment input; `problems` holds one `Problem` per thing wrong, in the order found."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = tuple(dict.fromkeys(problems))
        super().__init__("\n".join(map(str, self.problems)))

    @property
    def lines(self) -> list[str]:
        """The problems as the command line prints them, one line each."""
        return [str(problem) for problem in self.problems]


Marks = dict[KeyPath, tuple[Location, Location]]


def compose_marks(node: yaml.Node, path: KeyPath = (), marks: Marks | None = None, source: str = "file") -> Marks:
    """Maps each key path to the `Location` of its key and of its value; refuses duplicate keys."""
    marks = {} if marks is None else marks
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            location = mark_location(source, key_node.start_mark)
            if key in seen:
                raise ConfigError([Problem(location, path + (key,), "duplicate key")])
            seen.add(key)
            marks[path + (key,)] = (location, mark_location(source, value_node.start_mark))
            compose_marks(value_node, path + (key,), marks, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            location = mark_location(source, item.start_mark)
            marks[path + (index,)] = (location, location)
            compose_marks(item, path + (index,), marks, source)
    return marks


def mark_location(source: str, mark: yaml.Mark) -> Location:
    return Location(source, mark.line + 1, mark.column + 1)


def text_location(source: str, text: str, position: int) -> Location:
    """The line and column of `text[position]`."""
    line_start = text.rfind("\n", 0, position) + 1
    return Location(source, text.count("\n", 0, position) + 1, position - line_start + 1)


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors, aliases and deep nesting as it meets them (before expanding)."""

    def __init__(self, text: str, source: str):
        super().__init__(text)
        self.source, self.depth = source, 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConfigError(
                [
                    Problem(
                        mark_location(self.source, event.start_mark),
                        None,
                        "YAML anchors and aliases (&name, *name) are not accepted: write the value out, "
                        "or share settings through `variants:` or `--set`",
                    )
                ]
            )
        if self.depth == MAX_NESTING:
            raise ConfigError(
                [
                    Problem(
                        mark_location(self.source, event.start_mark),
                        None,
                        f"nested more than {MAX_NESTING} levels deep; an experiment file needs 5",
                    )
                ]
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# YAML 1.2 floats without a dot (`1e-3`), which PyYAML's YAML 1.1 rules read as strings: validation
# does not coerce strings to numbers, so a learning rate written so must be read as a number.
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> tuple[object, yaml.Node | None]:
    """The data of one YAML document and its node tree (None when empty), or a located `ConfigError`."""
    loader = None
    try:
        loader = StrictLoader(text, source)  # PyYAML checks for unprintable characters here
        node = loader.get_single_node()
        return (None if node is None else loader.construct_document(node)), node
    except yaml.reader.ReaderError as error:
        raise ConfigError(
            [
                Problem(
                    text_location(source, text, error.position),
                    None,
                    f"character {error.character:#06x} is not allowed in "
                    f'YAML: delete it, or write it as an escape ("\\x{error.character:02x}") inside double quotes',
                )
            ]
        ) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Location(source, 1, 1) if mark is None else mark_location(source, mark)
        raise ConfigError([Problem(where, None, f"YAML syntax error: {error.problem or error.context}")]) from None
    except yaml.YAMLError as error:
        raise ConfigError([Problem(Location(source, 1, 1), None, f"YAML error: {error}")]) from None
    finally:
        if loader is not None:
            loader.dispose()


def decode_utf8(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        column = len(data[line_start : error.start].decode("utf-8", errors="replace")) + 1
        where = Location(source, data.count(b"\n", 0, error.start) + 1, column)
        raise ConfigError(
            [
                Problem(
                    where,
                    None,
                    f"not UTF-8 (byte {data[error.start]:#04x}): save the file as UTF-8",
                )
            ]
        ) from None


def read_yaml(path: str) -> tuple[dict, Marks]:
    """An experiment (or claims) file's mapping and the `Location` of every key path in it.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8, is not YAML, or is not a mapping.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ConfigError([Problem(Location(str(path)), None, f"cannot read: {error.strerror}")]) from None
    document, node = parse_yaml(decode_utf8(data, str(path)), str(path))
    if not isinstance(document, dict):
        raise ConfigError(
            [
                Problem(
                    Location(str(path), 1, 1),
                    None,
                    "an experiment file is a mapping of keys (name, seeds, model, ...)",
                )
            ]
        )
    marks = compose_marks(node, source=str(path))
    marks[()] = (Location(str(path), 1, 1), Location(str(path), 1, 1))
    return document, marks
