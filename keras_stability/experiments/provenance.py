"""Where a run came from: library versions, the git commit and whether the tree was dirty, the host.

Read once per process (two git calls and six package look-ups cost ~20 ms, a fifth of an MLP epoch):
the code a process runs does not change while it runs.
"""

import copy
import functools
import importlib.metadata
import os
import platform
import subprocess

# What "dirty" means: a tracked file that decides a run's numbers differs from the commit. Reports,
# the README and tests do not, so rewriting a committed report leaves later runs clean.
# experiments/reproduce.sh checks the same paths (tests/test_reruns.py ties them).
CODE_PATHS = ("keras_stability", "experiments", "pyproject.toml")


def git_state(directory):
    def git(*arguments):
        return subprocess.run(
            ["git", *arguments], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changed)}
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
    """{"versions", "git", "host"} of this process, as a new dict the caller may change."""
    return copy.deepcopy(process_provenance())


@functools.cache
def process_provenance():
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {
        "versions": versions(),
        "git": git_state(source),
        "host": {"name": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count()},
    }
