"""Reading a run's files, each checked: text (gzip or not), a JSON object, a runner's CSV of numbers.

A file that cannot be trusted raises `DamagedFileError`, whose `Damage` names the file and what is
wrong with it; `run_files` decides from these what state a run directory is in.
"""

import csv
import dataclasses
import gzip
import json
import zlib

import numpy as np

INTEGER_COLUMNS = ("epoch", "step")
COMPACT_SUFFIX = ".gz"  # a CSV compacted by `step_logs`


@dataclasses.dataclass(frozen=True)
class Damage:
    """A file of a run that cannot be trusted (`path`), and why."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class DamagedFileError(Exception):
    """Raised by the readers below; `damage` says which file and why."""

    def __init__(self, path: str, problem: str):
        super().__init__(path, problem)
        self.damage = Damage(path, problem)


def read_text(path: str, size: int | None = None) -> str | None:
    """The file's text (its first `size` bytes when given), None when it does not exist.

    A `COMPACT_SUFFIX` file is gzip: its text is the bytes it decompresses to.
    """
    try:
        with open(path, "rb") as stream:
            data = stream.read(-1 if size is None else size)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DamagedFileError(path, f"cannot be read: {error.strerror}") from None
    if path.endswith(COMPACT_SUFFIX):
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as error:  # BadGzipFile is an OSError
            raise DamagedFileError(path, f"not a whole gzip stream: {error}") from None
    if size is not None and len(data) < size:
        raise DamagedFileError(path, f"cut short: {len(data)} bytes, fewer than the {size} progress.json records")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DamagedFileError(path, f"not UTF-8 at byte {error.start}") from None


def read_json_object(path: str) -> dict | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DamagedFileError(path, f"not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    if not isinstance(value, dict):
        raise DamagedFileError(path, f"a JSON object was expected. Received: {type(value).__name__}")
    return value


def read_table(
    path: str, columns: tuple[str, ...], size: int | None = None
) -> tuple[str, dict[str, np.ndarray] | None]:
    """A CSV of numbers written by the runner, as {column: float array}; None when it does not exist.

    When `path` does not exist, its compacted copy (`path` + `COMPACT_SUFFIX`) is read: `step_logs`
    writes it whole before it removes `path`, so one of them is always complete.

    Args:
        size: read only the file's first `size` bytes (the size progress.json records after an epoch);
            such a file (an unfinished run's) is never compacted.

    Returns:
        The path read (`path` or its compacted copy) and the table.
    """
    text = read_text(path, size)
    if text is None and size is None:
        compacted = read_text(path + COMPACT_SUFFIX)
        if compacted is not None:
            path, text = path + COMPACT_SUFFIX, compacted
    if text is None:
        return path, None
    return path, parse_table(text, columns, path)


def parse_table(text: str, columns: tuple[str, ...], path: str) -> dict[str, np.ndarray]:
    """The text of a runner's CSV (`path`, for the damage it names) as {column: float array}, one
    entry per line after the header."""
    if not text.endswith("\n"):
        raise DamagedFileError(path, "cut short: its last line is incomplete")
    rows = list(csv.reader(text.splitlines()))
    if tuple(rows[0]) != columns:
        raise DamagedFileError(path, f"its columns should be {','.join(columns)}. Received: {','.join(rows[0])}")
    integers = [index for index, name in enumerate(columns) if name in INTEGER_COLUMNS]
    values = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(columns):
            raise DamagedFileError(path, f"line {number} has {len(row)} fields, not {len(columns)}")
        try:
            values.append([float(cell) for cell in row])
        except ValueError:
            raise DamagedFileError(path, f"line {number} holds something other than numbers: {','.join(row)}") from None
        for index in integers:
            if not row[index].isdigit():
                problem = f"line {number}: {columns[index]} should be an integer. Received: {row[index]}"
                raise DamagedFileError(path, problem)
    table = np.array(values, dtype=np.float64).reshape(len(values), len(columns))
    return {name: table[:, index] for index, name in enumerate(columns)}
