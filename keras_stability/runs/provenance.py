"""Where a run came from: library versions, the git commit and whether the tree was dirty, the host.

Read once per process (two git calls and six package look-ups cost ~20 ms, a fifth of an MLP epoch):
the code a process runs does not change while it runs.

The host record names what decides a run's float results on a CPU besides the code: the processor
and its vector extensions (which kernels TensorFlow and oneDNN pick, and whether they fuse
multiply-adds), whether TensorFlow's oneDNN operations are on (on Linux its default follows the
processor: on only with AVX512-VNNI, AVX512-BF16, AVX-VNNI or AMX), the thread pools (how a sum is
split) and the TensorFlow build. `keras-stability verify` compares it with the verifying machine's.
"""

import copy
import functools
import importlib.metadata
import os
import platform
import subprocess
import sys

# The /proc/cpuinfo flags that choose kernels (`DefaultOneDnnPolicy` in TensorFlow's util/port.cc
# reads the VNNI, BF16 and AMX ones to decide whether oneDNN is on by default).
VECTOR_FLAGS = (
    "sse4_2",
    "fma",
    "f16c",
    "avx",
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)

# What "dirty" means: a tracked file that decides a run's numbers differs from the commit. Reports,
# the docs and tests do not, so rewriting a committed report leaves later runs clean.
# experiments/reproduce.sh checks the same paths (tests/experiments/test_reruns.py ties them).
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


def cpu_description(cpuinfo: str) -> tuple[str | None, list[str]]:
    """The processor's model name and its `VECTOR_FLAGS`, from the text of Linux's /proc/cpuinfo.

    Args:
        cpuinfo: the file's text (its first processor's block is read).

    Returns:
        (model name or None, the flags of `VECTOR_FLAGS` it lists, in that order).
    """
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, [flag for flag in VECTOR_FLAGS if flag in flags]


def processor():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            return cpu_description(stream.read())
    except OSError:  # not Linux: the platform's name for it, without flags
        return platform.processor() or None, None


def tensorflow_state():
    """oneDNN, thread pools and build of this process's TensorFlow (imported here: only runs need it)."""
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    build = tf.sysconfig.get_build_info()
    return {
        # The decision TensorFlow made (TF_ENABLE_ONEDNN_OPTS, else its default for this processor).
        "onednn": bool(_pywrap_util_port.IsMklEnabled()),
        "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        # 0: TensorFlow's default, a pool as large as the machine's cpus.
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "tensorflow_build": {
            "git_version": tf.version.GIT_VERSION,
            "compiler": tf.version.COMPILER_VERSION,
            **{key: build.get(key) for key in ("cpu_compiler", "is_cuda_build", "cuda_version")},
        },
    }


@functools.cache
def host():
    """This machine as meta.json records it: name, architecture, cpus, processor, TensorFlow's state.

    Read at a process's first run, after the runner has sized TensorFlow's thread pools."""
    model, flags = processor()
    record = {"name": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count()}
    record.update(processor=model, vector_flags=flags, platform=sys.platform)
    return {**record, **tensorflow_state()}


def provenance():
    """{"versions", "git", "host"} of this process, as a new dict the caller may change."""
    return copy.deepcopy({**process_provenance(), "host": host()})


@functools.cache
def process_provenance():
    """{"versions", "git"}: what decides whether two runs ran the same code (`run_store.same_code`);
    it imports no TensorFlow."""
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {"versions": versions(), "git": git_state(source)}
