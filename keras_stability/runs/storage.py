"""Crash-safe files: atomic writes, a per-run lock, and the results layout."""

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import tempfile

TEMPORARY_PREFIX = ".tmp-"  # .gitignore leaves these out too
# Errors that say the results cannot be written at all, rather than that one run went wrong.
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR)


def check_writable(directory: str) -> None:
    """Raises the `OSError` (its filename `directory`) that writing into `directory` would raise,
    before anything is written or created: a read-only or full disk, a missing permission or a file
    in the way fails the command at once, not in its first run. A missing `directory` is judged by
    the nearest folder above it that exists, where it would be created."""
    existing = os.path.abspath(directory)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        handle, probe = tempfile.mkstemp(dir=existing, prefix=TEMPORARY_PREFIX)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OSError(error.errno, error.strerror, directory) from None


def atomic_write_bytes(path, data, durable=True):
    """Writes `data` to `path` so that a reader (or a killed process) sees either the old file or the new one.

    `durable` also flushes it to the disk before the rename, so that an operating-system crash or power
    loss cannot leave the new name with missing data; files rewritten every epoch skip that (about 2 ms
    a file): a kill -9 loses nothing either way, and the checks that read them back (`run_files`)
    find what an OS crash could damage, so such a run is trained again instead of read wrong."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=TEMPORARY_PREFIX, suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_symlink(target: str, path: str) -> None:
    """Makes `path` a symbolic link to `target`, replacing what was there at once (never half-written)."""
    temporary = os.path.join(os.path.dirname(path), f"{TEMPORARY_PREFIX}{os.getpid()}-{os.path.basename(path)}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # left by a process with this id that was killed
    os.symlink(target, temporary)
    os.replace(temporary, path)


def remove_temporaries(directory):
    """Removes the temporary files that writers killed mid-write (kill -9) left in `directory`; call it
    only while holding the directory's lock, when no writer of it can be alive."""
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name.startswith(TEMPORARY_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))


def atomic_write_text(path, text, durable=True):
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def atomic_write_json(path, value, durable=True):
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n", durable)


def atomic_write_csv(path, columns, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def append_csv(path: str, columns: tuple[str, ...], rows: list[list]) -> None:
    """Appends `rows` to the CSV at `path`, starting it with the `columns` header if it is new or empty.

    Not atomic: a crash can leave part of a row. Callers record the size after each append (see
    `file_size`) and cut the file back to it (`truncate`) before appending again. Not flushed to the
    disk either: appends come every epoch (see `atomic_write_bytes`'s `durable`).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if file_size(path) == 0:
        writer.writerow(columns)
    writer.writerows(rows)
    with open(path, "ab") as stream:
        stream.write(buffer.getvalue().encode("utf-8"))


def file_size(path: str) -> int:
    """Bytes in `path`; 0 if it does not exist."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def truncate(path: str, size: int) -> None:
    """Cuts `path` back to its first `size` bytes (what a recorded append ended at)."""
    with open(path, "r+b") as stream:
        stream.truncate(size)
        stream.flush()
        os.fsync(stream.fileno())


def read_json(path, default=None):
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        return default


def read_csv_rows(path):
    """The data rows of a CSV written by `atomic_write_csv` (header dropped); [] if missing."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            return list(csv.reader(stream))[1:]
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def run_lock(directory):
    """Yields True if this process holds the run's lock, False if another live process does.

    `flock` locks die with their process, so a run killed with SIGKILL never stays locked.
    """
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
