"""`retried`: the one retry loop of the database code (opening a storage, creating a study)."""

import pytest

from keras_stability.experiments import database


@pytest.fixture
def sleeps(monkeypatch):
    waited = []
    monkeypatch.setattr(database.time, "sleep", waited.append)
    return waited


def flaky(failures, error=ConnectionError):
    calls = []

    def make():
        calls.append(None)
        if len(calls) <= failures:
            raise error(f"attempt {len(calls)}")
        return "opened"

    return make, calls


def test_retried_tries_again_after_growing_waits_until_it_succeeds(sleeps):
    make, calls = flaky(2)
    assert database.retried(make, ConnectionError, attempts=4) == "opened"
    assert len(calls) == 3 and sleeps == [0.5, 1.0]


def test_retried_raises_the_last_attempts_error(sleeps):
    make, calls = flaky(5)
    with pytest.raises(ConnectionError, match="attempt 3"):
        database.retried(make, ConnectionError, attempts=3)
    assert len(calls) == 3 and sleeps == [0.5, 1.0]


def test_retried_does_not_retry_other_errors(sleeps):
    make, calls = flaky(1, ValueError)
    with pytest.raises(ValueError, match="attempt 1"):
        database.retried(make, ConnectionError)
    assert len(calls) == 1 and sleeps == []
