"""`RunStatus`: the status a run's meta.json records, and which statuses are final or averaged."""

import enum


class RunStatus(str, enum.Enum):
    """A run's status, written into meta.json as its value (`"done"`, …); it equals that string.

    Example:

    >>> RunStatus("diverged") is RunStatus.DIVERGED, RunStatus.DIVERGED == "diverged"
    (True, True)
    >>> f"{RunStatus.DONE}", RunStatus.PRUNED in TERMINAL_STATUSES, RunStatus.PRUNED in FINISHED_STATUSES
    ('done', True, False)
    """

    RUNNING = "running"
    DONE = "done"
    DIVERGED = "diverged"
    PRUNED = "pruned"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


# Never trained again: the run ran to its end, diverged, or was pruned by its search.
TERMINAL_STATUSES = (RunStatus.DONE, RunStatus.DIVERGED, RunStatus.PRUNED)
# Numbers that stand for the run's configuration: averaged by the report, shared with another
# experiment, retrained by `verify`. A pruned trial stopped where its search wanted.
FINISHED_STATUSES = (RunStatus.DONE, RunStatus.DIVERGED)
