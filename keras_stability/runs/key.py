"""`RunKey`: which run a directory holds, and where a run lies: `<experiment>/<variant>/seed-<n>`.

The one definition of the results layout. A sweep cell's variant is `<variant>/<key=value,…>`
(`config.sweep.CELL_SEPARATOR`), so its run lies one directory deeper; no variant name holds "=".
"""

import os
import re
from dataclasses import dataclass

from keras_stability.config.sweep import CELL_SEPARATOR

SEED_DIRECTORY = re.compile(r"seed-(\d+)")


@dataclass(frozen=True)
class RunKey:
    """One run of the suite: an experiment's variant trained with one seed.

    Args:
        experiment: the experiment's name (`name:` in its file).
        variant: the variant's name; a sweep cell's is `<variant>/<key=value,…>`.
        seed: the run's seed.

    Example:

    >>> key = RunKey("doc002_mlp", "clip_1", 3)
    >>> key.label
    'doc002_mlp/clip_1/seed-3'
    >>> RunKey.parse(key.directory("results")) == key
    True
    """

    experiment: str
    variant: str
    seed: int

    def directory(self, root: str) -> str:
        """The run's directory under the results root `root`: `root/<experiment>/<variant>/seed-<n>`."""
        return os.path.join(root, self.experiment, *self.variant.split(CELL_SEPARATOR), f"seed-{self.seed}")

    @property
    def label(self) -> str:
        """`<experiment>/<variant>/seed-<n>`: how the runner names a run, and what `--rerun` patterns match."""
        return f"{self.experiment}/{self.within_experiment}"

    @property
    def within_experiment(self) -> str:
        """`<variant>/seed-<n>`: the run's place inside its experiment (a search trial's, a sweep run's)."""
        return f"{self.variant}/seed-{self.seed}"

    @classmethod
    def parse(cls, path: str) -> "RunKey":
        """The run that a run directory names: its last components are
        `<experiment>/<variant>/seed-<n>`, or `<experiment>/<variant>/<key=value,…>/seed-<n>` for a sweep cell.

        Raises:
            ValueError: if `path` does not end in a run's place.
        """
        parts = os.path.abspath(path).split(os.sep)
        match = SEED_DIRECTORY.fullmatch(parts[-1])
        depth = 4 if "=" in parts[-2] else 3
        if match is None:
            raise ValueError(
                f"A run's directory ends in <experiment>/<variant>/seed-<n>. Received: {path!r}. "
                "Give a run's directory under a results root."
            )
        return cls(parts[-depth], CELL_SEPARATOR.join(parts[-depth + 1 : -1]), int(match.group(1)))


def find_run_directories(root: str) -> list[str]:
    """Every run directory under `root` (a `seed-<n>` directory with a config.yaml), sorted."""
    found = []
    for directory, _, files in os.walk(root):
        if "config.yaml" in files and SEED_DIRECTORY.fullmatch(os.path.basename(directory)):
            found.append(directory)
    return sorted(found)
