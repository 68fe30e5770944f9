"""Optuna storage shared by workers, and heartbeats (the URL and its password: `config.credentials`).

Every worker records a heartbeat while it runs a trial; a trial whose worker stops beating for the
grace period (killed, machine lost) is failed by the next worker that looks and put back in the queue
once more as a new waiting trial (Optuna's `RetryHeartbeatStaleTrialCallback`).
"""

import time
from collections.abc import Callable
from typing import TypeVar

from keras_stability.config.credentials import hide_password, mask_password

DEFAULT_HEARTBEAT_S = 30
# How often a worker with nothing to take looks again at trials running elsewhere.
POLL_S = 2
# A worker is declared dead after this many missed heartbeats: a loaded machine can delay one or two.
GRACE_HEARTBEATS = 4
# A cell that kills its worker every time (out of memory, say) is given up after this many retries.
MAX_RETRIES = 3
T = TypeVar("T")


class StorageError(ValueError):
    """The database cannot be opened; the message names the URL without its password."""


def retried(make: Callable[[], T], retry_on: type[Exception] | tuple[type[Exception], ...], attempts: int = 4) -> T:
    """`make()`, called again after 0.5 s, 1 s, 1.5 s, … while it raises `retry_on`, `attempts` times at
    most; the last attempt's error propagates."""
    for attempt in range(attempts):
        try:
            return make()
        except retry_on:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise ValueError(f"`attempts` must be at least 1. Received: attempts={attempts}.")


def open_storage(url: str, heartbeat_s: float = DEFAULT_HEARTBEAT_S, attempts: int = 4):
    """An `optuna.storages.RDBStorage` for `url` in which killed workers' trials are failed and retried.

    Raises:
        StorageError: when the database cannot be reached; the message names the URL without its password.
    """
    import warnings

    import optuna
    import sqlalchemy.exc

    if heartbeat_s <= 0:
        raise ValueError(f"The heartbeat interval must be > 0 seconds. Received: {heartbeat_s}.")
    # SQLite serialises writers; two workers' heartbeats and trials wait for each other instead of failing.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}

    def storage():
        with warnings.catch_warnings():
            # Heartbeats and their retry callback are marked experimental; they are the recovery we want.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=int(max(1, heartbeat_s)),
                grace_period=int(max(1, heartbeat_s) * GRACE_HEARTBEATS),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
            )

    try:
        # Workers starting together race to create the tables; the losers try again.
        return retried(storage, sqlalchemy.exc.DatabaseError, attempts)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        raise StorageError(
            f"Cannot open the Optuna storage {mask_password(url)}: {hide_password(str(error).splitlines()[0], url)}. "
            "Check the URL, that the server is reachable, and the password (PGPASSWORD or ~/.pgpass)."
        ) from None


def retry_dead_workers(study) -> None:
    """Fails the trials of `study` whose worker stopped beating; the retry callback queues them again."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the recovery we want
        optuna.storages.fail_stale_trials(study)
