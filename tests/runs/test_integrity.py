"""`check_run` on copies of a real finished run: sound as written, damaged in each way it can be, and
judged as the runner judges it (`run_files.inspect_run`)."""

import gzip
import io
import json
import os
import shutil

import numpy as np
import pytest

from keras_stability import step_log
from keras_stability.config.loading import load_experiment
from keras_stability.experiments import runner
from keras_stability.runs import epoch_record, integrity, run_files
from keras_stability.runs.integrity import check_run
from keras_stability.runs.readers import Damage
from keras_stability.runs.run_files import inspect_run


def make_finished_run(root):
    """Runs quickstart's no_clip variant, seed 0, for one epoch under `root`; returns its directory."""
    experiment = load_experiment("experiments/quickstart.yaml", ["training.epochs=1"])
    status = runner.run_one(str(root), experiment.variants["no_clip"], "no_clip", 0, log=lambda _: None)
    assert status == "done"
    return os.path.join(str(root), "quickstart", "no_clip", "seed-0")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return make_finished_run(tmp_path_factory.mktemp("results"))


@pytest.fixture
def compacted(finished, tmp_path):
    """A copy of the finished run (its step log compacted), at the same place under a results root of its own."""
    copy = tmp_path / "quickstart" / "no_clip" / "seed-0"
    shutil.copytree(finished, copy)
    return str(copy)


@pytest.fixture
def run(compacted):
    """The copy as written before step logs were compacted: a plain steps.csv, as an unfinished run keeps."""
    packed = os.path.join(compacted, "steps.csv.gz")
    with open(packed, "rb") as stream, open(os.path.join(compacted, "steps.csv"), "wb") as plain:
        plain.write(gzip.decompress(stream.read()))
    os.unlink(packed)
    return compacted


def edit(path, change):
    with open(path, "rb") as stream:
        data = stream.read()
    with open(path, "wb") as stream:
        stream.write(change(data))


def edit_meta(run, **changes):
    path = os.path.join(run, "meta.json")
    meta = json.load(open(path))
    meta.update(changes)
    json.dump(meta, open(path, "w"))
    return meta


def test_one_list_of_columns_one_of_statuses_one_damage():
    columns = (epoch_record.METRIC_COLUMNS, epoch_record.STEP_COLUMNS, epoch_record.TIMING_COLUMNS)
    assert all(a is b for a, b in zip(run_files.CSV_COLUMNS.values(), columns, strict=True))
    assert runner.METRIC_COLUMNS is epoch_record.METRIC_COLUMNS and runner.STEP_COLUMNS is epoch_record.STEP_COLUMNS
    assert runner.TERMINAL_STATUSES is run_files.TERMINAL_STATUSES == ("done", "diverged", "pruned")
    assert integrity.Damage is Damage
    assert epoch_record.STEP_COLUMNS == ("epoch", "step", *step_log.STEP_FIELDS)


def test_float32_text_is_shortest_and_reads_back_as_the_same_float32():
    bits = np.random.default_rng(0).integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate([bits.view(np.float32), np.float32([0.1, -0.0, np.inf, -np.inf, 1e-45, 3.4028235e38])])
    finite = values[np.isfinite(values)]
    back = np.array([float(epoch_record.float32_text(v)) for v in finite]).astype(np.float32)  # via float64
    np.testing.assert_array_equal(back.view(np.uint32), finite.view(np.uint32))
    assert [epoch_record.float32_text(v) for v in (0.1, np.float32(0.2776161), np.nan, np.inf, 5.57e11)] == [
        "0.1",
        "0.2776161",
        "nan",
        "inf",
        "5.57e+11",
    ]


def test_a_finished_run_is_sound_and_read_as_written(run):
    check = check_run(run)
    assert check.sound and check.damage is None and check.status == "done"
    assert check.document["experiment"] == "quickstart" and check.document["seed"] == 0
    assert check.meta["epochs_done"] == 1
    metrics = np.loadtxt(os.path.join(run, "metrics.csv"), delimiter=",", skiprows=1, ndmin=2)
    for index, column in enumerate(epoch_record.METRIC_COLUMNS):
        np.testing.assert_array_equal(check.metrics[column], metrics[:, index])
    steps = np.loadtxt(os.path.join(run, "steps.csv"), delimiter=",", skiprows=1, ndmin=2)
    # 8,100 training digits in batches of 100: 81 steps, numbered 1 to 81.
    assert check.meta["steps_per_epoch"] == 81 == len(steps)
    np.testing.assert_array_equal(check.steps["step"], np.arange(1, 82))
    np.testing.assert_array_equal(check.steps["grad_norm"], steps[:, 3])


def half(data):
    return data[: len(data) // 2]


def drop_last_lines(count):
    return lambda data: b"".join(data.splitlines(keepends=True)[:-count])


def drop_column(index):
    def change(data):
        rows = [line.split(b",") for line in data.splitlines()]
        return b"".join(b",".join(row[:index] + row[index + 1 :]) + b"\n" for row in rows)

    return change


def test_a_compacted_step_log_reads_as_the_steps_csv_it_holds(compacted):
    packed_path, plain_path = (os.path.join(compacted, name) for name in ("steps.csv.gz", "steps.csv"))
    assert not os.path.exists(plain_path)
    with open(packed_path, "rb") as stream:
        written = gzip.decompress(stream.read())
    packed = check_run(compacted)
    assert packed.sound and packed.status == "done"
    reference = np.loadtxt(io.BytesIO(written), delimiter=",", skiprows=1, ndmin=2)
    assert reference.shape == (81, len(epoch_record.STEP_COLUMNS))
    with open(plain_path, "wb") as stream:  # both forms, as a kill -9 during compaction leaves them
        stream.write(written)
    edit(packed_path, half)  # the plain file is the truth: the .gz is not read
    plain = check_run(compacted)
    assert plain.sound
    for index, column in enumerate(epoch_record.STEP_COLUMNS):
        np.testing.assert_array_equal(packed.steps[column], reference[:, index])
        np.testing.assert_array_equal(plain.steps[column], reference[:, index])


def gzip_again(change):
    return lambda data: gzip.compress(change(gzip.decompress(data)), mtime=0)


def flip_checksum(data):
    return data[:-8] + bytes([data[-8] ^ 1]) + data[-7:]  # the trailer's CRC-32, first byte


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda data: data[:-9], "not a whole gzip stream: Compressed file ended before the end-of-stream marker"),
        (flip_checksum, "not a whole gzip stream: CRC check failed"),
        (lambda data: b"steps\n", "not a whole gzip stream: Not a gzipped file (b'st')"),
        (gzip_again(drop_last_lines(10)), "71 steps, but meta.json says 1 epochs of 81 are done"),
        (gzip_again(lambda data: data.replace(b"\n1,5,", b"\n1,5,x,", 1)), "line 6 has 6 fields, not 5"),
    ],
    ids=["cut", "checksum", "not-gzip", "rows-missing", "field"],
)
def test_a_damaged_compacted_step_log_is_named_with_why(compacted, change, problem):
    path = os.path.join(compacted, "steps.csv.gz")
    edit(path, change)
    found = inspect_run(compacted)
    assert (found.state, found.damaged_file, found.damage.path) == ("damaged", "steps.csv.gz", path)
    assert found.problem.startswith(problem), found.problem
    assert check_run(compacted).damage == found.damage


@pytest.mark.parametrize(
    "name, change, problem",
    [
        ("metrics.csv", half, "cut short: its last line is incomplete"),
        ("metrics.csv", drop_last_lines(1), "0 epochs, but meta.json says 1 are done"),
        (
            "metrics.csv",
            drop_column(3),
            "its columns should be "
            + ",".join(runner.METRIC_COLUMNS)
            + ". Received: "
            + ",".join(runner.METRIC_COLUMNS[:3] + runner.METRIC_COLUMNS[4:]),
        ),
        ("metrics.csv", lambda data: data.replace(b"\n1,", b"\n2,"), "its epochs are not numbered 1, 2, … in order"),
        (
            "metrics.csv",
            lambda data: data.rstrip(b"\n").rsplit(b",", 1)[0] + b",\n",
            "line 2 holds something other than numbers: ",
        ),
        ("steps.csv", half, "cut short: its last line is incomplete"),
        ("steps.csv", drop_last_lines(10), "71 steps, but meta.json says 1 epochs of 81 are done"),
        ("steps.csv", lambda data: data.replace(b"\n1,5,", b"\n1,5,x,", 1), "line 6 has 6 fields, not 5"),
        ("timing.csv", lambda data: data + b"2,0.5\n", "2 epochs, but meta.json says 1 are done"),
        ("meta.json", half, "not JSON: "),
        ("meta.json", lambda data: b"[]", "a JSON object was expected. Received: list"),
        ("meta.json", lambda data: data.replace(b'"status": "done"', b'"status": "d\xe9ne"'), "not UTF-8 at byte "),
        ("config.yaml", lambda data: b"experiment: [\n", "YAML syntax error: "),
        ("config.yaml", lambda data: b"- a\n", "a mapping of experiment, variant, seed and config was expected"),
        (
            "config.yaml",
            lambda data: data.replace(b"variant: no_clip", b"variant: other"),
            "it describes quickstart/other/seed-0, but lies in quickstart/no_clip/seed-0",
        ),
    ],
    ids=[
        "metrics-cut",
        "metrics-row-missing",
        "metrics-column-missing",
        "metrics-epochs",
        "metrics-cell",
        "steps-cut",
        "steps-rows-missing",
        "steps-field",
        "timing-extra-row",
        "meta-cut",
        "meta-list",
        "meta-latin-1",
        "config-syntax",
        "config-list",
        "config-elsewhere",
    ],
)
def test_each_damage_names_the_file_and_why(run, name, change, problem):
    path = os.path.join(run, name)
    edit(path, change)
    check = check_run(run)
    assert not check.sound and check.status == "damaged"
    assert check.damage.path == path
    assert check.damage.problem.startswith(problem)
    assert str(check.damage) == f"{path}: {check.damage.problem}"
    assert check.metrics == check.steps == check.meta == check.document == {}
    # The runner's decision is the same damage.
    found = inspect_run(run)
    assert (found.state, found.damage, found.damaged_file) == ("damaged", check.damage, name)


def test_a_missing_file_is_damage_once_epochs_are_done(run):
    os.unlink(os.path.join(run, "steps.csv"))
    steps = os.path.join(run, "steps.csv")
    assert check_run(run).damage == Damage(steps, "missing, but meta.json says 1 epochs are done")
    os.unlink(os.path.join(run, "config.yaml"))
    assert check_run(run).damage == Damage(os.path.join(run, "config.yaml"), "missing")


def test_an_unfinished_run_is_judged_by_its_progress_not_its_meta(run):
    # meta.json is written at a run's start and end: while it runs, its epochs_done is stale.
    edit_meta(run, status="running", epochs_done=0)
    checkpoint = json.load(open(os.path.join(run, "progress.json")))["checkpoint"]
    open(os.path.join(run, checkpoint), "w").close()
    assert check_run(run).sound and check_run(run).status == "running"
    assert inspect_run(run).state == "unfinished" and inspect_run(run).progress.epochs_done == 1
    edit_meta(run, status="done", epochs_done=0)
    assert check_run(run).damage.problem == "1 epochs, but meta.json says 0 are done"


def test_an_interrupted_epochs_appends_are_not_damage_and_not_read(run):
    # Killed during epoch 2: its rows went past the csv_sizes progress.json recorded after epoch 1.
    edit_meta(run, status="running")
    progress = json.load(open(os.path.join(run, "progress.json")))
    open(os.path.join(run, progress["checkpoint"]), "w").close()
    sound = check_run(run)
    with open(os.path.join(run, "steps.csv"), "a") as stream:
        stream.write("2,82,2.1")  # part of a row
    with open(os.path.join(run, "metrics.csv"), "a") as stream:
        stream.write("2,0.5,0.9,0.5,0.9,1.0,1.0,0.0,0.0,0.1\n")
    check = check_run(run)
    assert check.sound and check.status == "running" and inspect_run(run).state == "unfinished"
    np.testing.assert_array_equal(check.metrics["epoch"], [1])
    for column in epoch_record.STEP_COLUMNS:
        np.testing.assert_array_equal(check.steps[column], sound.steps[column])
    assert len(check.steps["step"]) == 81
    assert os.path.getsize(os.path.join(run, "steps.csv")) > progress["csv_sizes"]["steps.csv"]
    # The same rows in a finished run are damage: nothing cuts them off.
    edit_meta(run, status="done")
    assert check_run(run).damage == Damage(os.path.join(run, "metrics.csv"), "2 epochs, but meta.json says 1 are done")


def test_an_unfinished_run_needs_the_progress_it_resumes_from(run):
    edit_meta(run, status="running")
    progress_path = os.path.join(run, "progress.json")
    progress = json.load(open(progress_path))
    checkpoint = os.path.join(run, progress["checkpoint"])  # deleted when the run finished
    assert check_run(run).damage == Damage(checkpoint, "missing: progress.json names it as the last epoch's checkpoint")
    open(checkpoint, "w").close()
    json.dump({**progress, "epochs_done": 2}, open(progress_path, "w"))
    metrics = os.path.join(run, "metrics.csv")
    assert check_run(run).damage == Damage(metrics, "1 epochs, but progress.json says 2 are done")
    sizes = {**progress["csv_sizes"], "steps.csv": progress["csv_sizes"]["steps.csv"] + 10}
    json.dump({**progress, "csv_sizes": sizes}, open(progress_path, "w"))
    assert check_run(run).damage.path == os.path.join(run, "steps.csv")
    assert check_run(run).damage.problem.startswith("cut short: ")
    json.dump({"epochs_done": 1, "checkpoint": progress["checkpoint"], "seed_states": []}, open(progress_path, "w"))
    assert check_run(run).damage.problem == (
        "its keys should be checkpoint, csv_sizes, diverged_at_step, epochs_done. "
        "Received: checkpoint, epochs_done, seed_states"
    )
    edit(progress_path, half)
    assert check_run(run).damage.path == progress_path and check_run(run).damage.problem.startswith("not JSON: ")


def test_meta_fields_are_typed(run):
    edit_meta(run, epochs_done="1")
    assert check_run(run).damage.problem == "epochs_done should be an integer ≥ 0. Received: '1'"
    edit_meta(run, epochs_done=1, status=None)
    assert check_run(run).damage.problem == "status should be text. Received: None"


def test_committed_results_are_sound():
    # The report reads the repository's results/ (first-edition runs, written by the old runner) as sound.
    results = os.path.join(os.path.dirname(__file__), "..", "..", "results")
    checks = [check_run(d) for d, _, files in os.walk(results) if "meta.json" in files]
    assert checks and all(check.sound for check in checks), [c.damage for c in checks if not c.sound][:3]
