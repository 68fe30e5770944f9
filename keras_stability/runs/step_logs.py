"""Compact step logs: a finished run keeps its steps.csv as steps.csv.gz, gzip of the same lines.

Per-step rows are most of what a results tree holds; gzip keeps every one of them in a few times
fewer bytes. A run planned for more steps than `step_thinning.MAX_BLOCKS` keeps only the lines
that its thinning keeps (`step_thinning`): tens of thousands of steps take as few bytes as a short
run's. The runner compacts a run once its final meta.json is written (`runner.run_one`), and
`keras-stability compact` compacts results written before (`compact_results`). An unfinished run
keeps a plain steps.csv: resuming cuts it back by size. Readers take either form through
`readers.read_table`.

- Crash-safe: the .gz is written whole (a temporary file renamed over it) before steps.csv is
  removed, so a kill -9 at any point leaves steps.csv, a complete steps.csv.gz, or both; with both,
  steps.csv is the truth, and compacting again (the runner does when it skips the finished run)
  rewrites the .gz from it.
- Deterministic: the gzip header holds no file name, mtime 0 and "unknown" as the operating
  system, and the level is fixed, so the same steps.csv gives the same .gz on any machine with the
  same deflate (zlib; another implementation, such as zlib-ng, may choose other valid bytes).
- Shared runs (`run_store`) link the trained run's .gz, never its steps.csv, which compaction
  removes; `compact` re-points links made to steps.csv before this layout.
"""

import contextlib
import dataclasses
import gzip
import os
import struct
import zlib
from collections.abc import Iterable

import numpy as np

from keras_stability.runs import step_thinning, storage
from keras_stability.runs.epoch_record import STEP_COLUMNS
from keras_stability.runs.readers import COMPACT_SUFFIX, DamagedFileError, parse_table, read_json_object
from keras_stability.runs.run_files import TERMINAL_STATUSES, read_document

PLAIN = "steps.csv"
COMPACT = PLAIN + COMPACT_SUFFIX
LEVEL = 9  # the smallest output; a run's step log takes milliseconds to compress even so
# RFC 1952 header: magic, deflate, no flags (no file name), mtime 0, extra flags 2 (level 9), OS 255 (unknown).
# Framed by hand because `gzip.compress(data, 9, mtime=0)` hands over to zlib's own gzip wrapper, which
# writes the OS byte of the platform zlib was built for (3 on Linux, CPython 3.11): every committed
# steps.csv.gz would differ from a recompaction of itself in byte 9.
GZIP_HEADER = struct.pack("<BBBBLBB", 0x1F, 0x8B, 8, 0, 0, 2, 255)


def gzip_bytes(data: bytes) -> bytes:
    """`data` as a gzip stream that depends on nothing but `data` (see the module docstring)."""
    deflated = zlib.compress(data, level=LEVEL, wbits=-15)  # a raw deflate stream, framed here
    return GZIP_HEADER + deflated + struct.pack("<LL", zlib.crc32(data), len(data) & 0xFFFFFFFF)


@dataclasses.dataclass(frozen=True)
class Compaction:
    """One run's step log compacted: its steps.csv's bytes, its steps.csv.gz's, and the stride of
    its thinning (1: every line kept)."""

    directory: str
    plain_bytes: int
    compact_bytes: int
    every: int = 1


def thinned(data: bytes, every: int) -> bytes:
    """The lines of a steps.csv (`data`) that thinning at `every` keeps, header first; all of `data`
    when it cannot be read as a step log (the runner finds that damage and trains the run again)."""
    if every == 1:
        return data
    try:
        table = parse_table(data.decode("utf-8"), STEP_COLUMNS, PLAIN)
    except (DamagedFileError, UnicodeDecodeError):
        return data
    header, *lines = data.splitlines(keepends=True)
    keep = step_thinning.kept(table["step"].astype(np.int64), table["loss"], table["grad_norm"], every)
    return header + b"".join(line for line, kept in zip(lines, keep) if kept)


def thinning_stride(directory: str) -> int:
    """The stride the finished run's step log is thinned at; 1 when its files cannot say."""
    try:
        meta = read_json_object(os.path.join(directory, "meta.json")) or {}
        config = read_document(directory)["config"]
    except DamagedFileError:  # compacted as it is: the runner retrains a damaged run
        return 1
    return step_thinning.run_stride(config, meta)


def compact(directory: str) -> Compaction | None:
    """Replaces the finished run's steps.csv by steps.csv.gz, thinned where the run is long; None when
    there is nothing to do (no steps.csv, and a .gz that is as thin as it should be).

    The caller knows the run has finished (its meta.json status is terminal). No lock is needed:
    each step is atomic and repeating it writes the same bytes, so two processes compacting the same
    run end as one would. A .gz written before thinning existed is thinned in place.
    """
    plain = os.path.join(directory, PLAIN)
    if os.path.islink(plain):
        return follow_compacted(directory, plain)
    every = thinning_stride(directory)
    packed_path = os.path.join(directory, COMPACT)
    rethinning = False  # thinning a .gz written before thinning existed
    try:
        with open(plain, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        rethinning = True
        if every == 1 or os.path.islink(packed_path) or not os.path.isfile(packed_path):
            return None
        try:
            with open(packed_path, "rb") as stream:
                data = gzip.decompress(stream.read())
        except (EOFError, OSError, zlib.error):  # damage, which the runner finds
            return None
    kept = thinned(data, every)
    if rethinning and kept == data:
        return None
    packed = gzip_bytes(kept)
    storage.atomic_write_bytes(packed_path, packed)
    with contextlib.suppress(FileNotFoundError):  # another process compacting the same run removed it
        os.unlink(plain)
    return Compaction(directory, len(data), len(packed), every)


def follow_compacted(directory: str, plain: str) -> Compaction | None:
    """A shared run's link to its trained run's steps.csv (made before compaction): compacts the
    trained run, and makes the link name its steps.csv.gz."""
    trained = os.path.dirname(os.path.realpath(plain))
    compaction = compact(trained)
    target = os.path.join(trained, COMPACT)
    if os.path.exists(target):
        storage.atomic_symlink(os.path.relpath(target, directory), os.path.join(directory, COMPACT))
        os.unlink(plain)
    return compaction


@dataclasses.dataclass(frozen=True)
class Summary:
    """What `compact_results` did: the runs compacted, and the bytes of all files under the results."""

    compactions: tuple[Compaction, ...]
    bytes_before: int
    bytes_after: int

    def __str__(self) -> str:
        plain = sum(c.plain_bytes for c in self.compactions)
        packed = sum(c.compact_bytes for c in self.compactions)
        thin = sum(c.every > 1 for c in self.compactions)
        return (
            f"{len(self.compactions)} runs compacted{f' ({thin} long ones thinned)' if thin else ''}: "
            f"{PLAIN} {plain:,} bytes → {COMPACT} {packed:,} bytes; "
            f"all files: {self.bytes_before:,} → {self.bytes_after:,} bytes"
        )


def tree_bytes(root: str) -> int:
    """The bytes of the files under `root`, as git would store them (a link counts its target's name)."""
    return sum(
        os.lstat(os.path.join(directory, name)).st_size for directory, _, names in os.walk(root) for name in names
    )


def finished(directory: str) -> bool:
    """Whether the run's meta.json gives a status in `TERMINAL_STATUSES` (whatever its other files hold)."""
    try:
        meta = read_json_object(os.path.join(directory, "meta.json"))
    except DamagedFileError:
        return False
    return meta is not None and meta.get("status") in TERMINAL_STATUSES


def compact_results(root: str, run_directories: Iterable[str]) -> Summary:
    """Compacts every finished run in `run_directories` (those under `root`) that has a plain steps.csv.

    Unfinished runs are left as they are (resuming cuts steps.csv back by size). A damaged finished
    run keeps its damage in the .gz, and the runner still retrains it. Running it again compacts
    nothing more.
    """
    before = tree_bytes(root)
    compactions = []
    for directory in run_directories:
        if finished(directory):
            compaction = compact(directory)
            if compaction is not None:
                compactions.append(compaction)
    return Summary(tuple(compactions), before, tree_bytes(root))
