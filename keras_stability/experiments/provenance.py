"""Where a run came from: library versions, the git commit and whether the tree was dirty, the host."""

import importlib.metadata
import os
import platform
import subprocess


def git_state(directory):
    def git(*arguments):
        return subprocess.run(
            ["git", *arguments], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions():
    result = {"python": platform.python_version()}
    for package in ("keras-stability", "tensorflow", "keras", "numpy", "tensorflow-datasets", "pydantic"):
        try:
            result[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            result[package] = None
    return result


def provenance():
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {
        "versions": versions(),
        "git": git_state(source),
        "host": {"name": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count()},
    }
