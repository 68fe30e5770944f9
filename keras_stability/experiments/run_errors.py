"""How a run that stops early is reported: Ctrl-C as one line saying where it resumes, a failure as
one line ending at the frame that raised, with the whole traceback kept in meta.json."""

import traceback

from keras_stability.runs import storage


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run; a `KeyboardInterrupt`, so code that stops on one still does.

    `str()` is the line the command prints: the run and the epoch it resumes after."""

    def __init__(self, label: str, epochs_done: int):
        self.label, self.epochs_done = label, epochs_done
        where = f"after epoch {epochs_done}" if epochs_done else "from its start"
        super().__init__(f"{label}: interrupted; running the same command again resumes it {where}")

    def __reduce__(self):  # picklable, so that a runner process (--jobs) can return it
        return type(self), (self.label, self.epochs_done)


def epochs_saved(directory: str) -> int:
    """The epochs a resume would skip: those the run's progress.json records (0 when unreadable)."""
    try:
        saved = storage.read_json(f"{directory}/progress.json", None)
    except (OSError, ValueError):
        return 0
    return saved.get("epochs_done", 0) if isinstance(saved, dict) else 0


def failure(error: BaseException) -> dict:
    """What meta.json records of a failed run: the error and its traceback (file, line and code of
    each frame: a factory's bug is found in the user's file, not only named)."""
    return {
        "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exception(type(error), error, error.__traceback__),
    }


def failure_line(label: str, error: BaseException) -> str:
    """One line: the run, the error, and the frame that raised it (the innermost)."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{label}: failed: {type(error).__name__}: {error}{where}"
