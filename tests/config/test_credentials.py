"""Database credentials: the URL from the flag or the environment, libpq's PGPASSWORD, a password refused in
an experiment file, and never written to results, reports, logs or error messages."""

import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest
from test_search import SEARCH, postgres_server
from test_sweep import SWEEP

from keras_stability.config.credentials import hide_password, mask_password, storage_url
from keras_stability.config.loading import ConfigError, load_experiment

PASSWORD = "Secr3t-pass_word"  # distinctive, so that a grep finds every copy


def test_mask_password_hides_only_the_password():
    assert (
        mask_password("postgresql+psycopg://ada:s%40cret@db-host:5432/optuna")
        == "postgresql+psycopg://ada:***@db-host:5432/optuna"
    )
    assert mask_password("postgresql+psycopg://ada@db-host/optuna") == "postgresql+psycopg://ada@db-host/optuna"
    assert mask_password("sqlite:////shared/study.db") == "sqlite:////shared/study.db"
    url = "postgresql://ada:s%40cret@db/x"
    assert hide_password("failed for s@cret and s%40cret", url) == "failed for *** and ***"


def test_the_url_comes_from_the_flag_then_the_environment_then_the_file():
    environment = {"KERAS_STABILITY_STORAGE": "postgresql://env@db/x"}
    assert storage_url("postgresql://flag@db/x", "postgresql://file@db/x", environment) == "postgresql://flag@db/x"
    assert storage_url(None, "postgresql://file@db/x", environment) == "postgresql://env@db/x"
    assert storage_url(None, "postgresql://file@db/x", {}) == "postgresql://file@db/x"
    assert storage_url(None, None, {}) is None


def test_a_password_in_the_experiment_file_is_refused_without_being_shown(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        SEARCH.replace("SAMPLER", "random") + f"  storage: postgresql+psycopg://ada:{PASSWORD}@db-host/optuna\n"
    )
    with pytest.raises(ConfigError) as error:
        load_experiment(str(path))
    assert error.value.lines == [
        f"{path}:16:12: search.storage: a database password does not belong in an experiment file. Received: "
        "postgresql+psycopg://ada:***@db-host/optuna. Drop the password and give it through PGPASSWORD or "
        "~/.pgpass, or give the whole URL through KERAS_STABILITY_STORAGE or --storage"
    ]


def cli(arguments, cwd, environment=None):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.getcwd(), **(environment or {})}
    return subprocess.run(
        [sys.executable, "-m", "keras_stability.cli", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def test_an_unreachable_database_is_named_without_its_password(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SEARCH.replace("SAMPLER", "random"))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://ada:{PASSWORD}@127.0.0.1:{port}/optuna"
    pytest.importorskip("psycopg", reason="pip install 'keras-stability[postgres]'")
    completed = cli(["search", str(path), "--storage", url], tmp_path)
    assert completed.returncode == 2
    message = completed.stderr.strip().splitlines()[-1]
    assert message.startswith(
        f"keras-stability search: Cannot open the Optuna storage postgresql+psycopg://ada:***@127.0.0.1:{port}/optuna: "
    )
    assert PASSWORD not in completed.stdout + completed.stderr


def every_file_text(root):
    for path in pathlib.Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path, path.read_bytes().decode("utf-8", "replace")


def test_no_password_is_written_to_results_reports_or_output(tmp_path):
    (tmp_path / "search.yaml").write_text(SEARCH.replace("SAMPLER", "random").replace("trials: 3", "trials: 2"))
    (tmp_path / "sweep.yaml").write_text(
        textwrap.dedent(
            SWEEP.replace("seeds: [0, 1]", "seeds: [0]").replace(
                "optimizer.learning_rate: [0.05, 0.5]", "optimizer.learning_rate: [0.05]"
            )
        )
    )
    with postgres_server(password=PASSWORD) as url:
        with_password = url.replace("postgres@", f"postgres:{PASSWORD}@")
        # The whole URL from the environment (not on the command line, where `ps` shows it) ...
        search = cli(["search", "search.yaml"], tmp_path, {"KERAS_STABILITY_STORAGE": with_password})
        assert search.returncode == 0, search.stderr[-3000:]
        # ... or a URL without a password, which libpq completes from PGPASSWORD.
        sweep = cli(["sweep", "sweep.yaml", "--storage", url], tmp_path, {"PGPASSWORD": PASSWORD})
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        assert "runs: 3 done" in sweep.stdout
        # Without the password the server refuses, and the message says where a password comes from.
        refused = cli(["sweep", "sweep.yaml", "--storage", url], tmp_path, {"PGPASSWORD": ""})
        assert refused.returncode == 2 and "PGPASSWORD or ~/.pgpass" in refused.stderr.strip().splitlines()[-1]
    written = dict(every_file_text(tmp_path))
    assert any(path.name == "search.html" for path in written) and any(path.name == "meta.json" for path in written)
    assert [str(path) for path, text in written.items() if PASSWORD in text] == []
    for completed in (search, sweep, refused):
        assert PASSWORD not in completed.stdout + completed.stderr
