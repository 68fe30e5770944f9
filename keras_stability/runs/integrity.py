"""The report's reading of a run directory: `check_run`, on the runner's own check (`run_files`).

Whether a run's files are sound is decided once, by `run_files.inspect_run`, for the runner (which
retrains a damaged run) and for the report (which lists a damaged run and never averages it).
`check_run` gives the report what it reads from that check: config.yaml, meta.json, metrics.csv and
steps.csv as arrays (for an unfinished run, the epochs its progress.json records as complete), the
run's status, and the `Damage` found, if any.
"""

from dataclasses import dataclass, field

import numpy as np

from keras_stability.runs.readers import Damage
from keras_stability.runs.run_files import inspect_run

RERUN_ADVICE = "rerun `keras-stability run <experiment file>`: the runner retrains a damaged run"


@dataclass(frozen=True)
class RunCheck:
    """What `check_run` read from a run directory; `damage` is None when the files are sound.

    When damaged, the fields between `directory` and `damage` are empty.
    """

    directory: str
    document: dict = field(default_factory=dict)  # config.yaml: experiment, variant, seed, config
    meta: dict = field(default_factory=dict)
    metrics: dict[str, np.ndarray] = field(default_factory=dict)  # column → values over epochs
    steps: dict[str, np.ndarray] = field(default_factory=dict)  # column → values over steps
    damage: Damage | None = None

    @property
    def sound(self) -> bool:
        return self.damage is None

    @property
    def status(self) -> str:
        """meta.json's status; "incomplete" before the runner first wrote it; "damaged" when damaged."""
        return "damaged" if self.damage else self.meta.get("status", "incomplete")


def check_run(directory: str) -> RunCheck:
    """Reads a run directory through `run_files.inspect_run` (whose docstring lists what is checked).

    Returns:
        A `RunCheck`: the parsed config.yaml, meta.json, metrics.csv and steps.csv, and the first
        `Damage` found (None when the run is sound).
    """
    files = inspect_run(directory)
    metrics, steps = (files.tables.get(name, {}) for name in ("metrics.csv", "steps.csv"))
    return RunCheck(directory, files.document, files.meta, metrics, steps, files.damage)
