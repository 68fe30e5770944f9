"""Compact step logs: deterministic gzip bytes, results written before compaction read and compacted the
same, and shared runs' links that never dangle."""

import gzip
import os
import zlib

import pandas as pd
from test_run_store import experiments

from keras_stability import cli
from keras_stability.experiments.suite import run_experiments
from keras_stability.report.collect import collect
from keras_stability.results import load_runs, load_steps
from keras_stability.runs import step_logs

STEPS = b"epoch,step,loss,grad_norm,clipped_norm\n1,1,2.3025851,0.5,0.5\n1,2,2.1,0.75,0.75\n"


def test_gzip_bytes_depend_on_nothing_but_the_data():
    packed = step_logs.gzip_bytes(STEPS)
    # Magic, deflate, no flags (no file name), mtime 0, extra flags 2 (level 9), OS 255 (unknown).
    assert packed[:10] == bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 2, 255])
    assert packed == step_logs.gzip_bytes(STEPS) and gzip.decompress(packed) == STEPS
    # Past the header, the stream is the standard library's at level 9 (which writes this OS's code).
    assert packed[10:] == gzip.compress(STEPS, compresslevel=9, mtime=0)[10:]
    assert packed[-8:] == zlib.crc32(STEPS).to_bytes(4, "little") + len(STEPS).to_bytes(4, "little")
    assert gzip.decompress(step_logs.gzip_bytes(b"")) == b""


def shared_results(tmp_path):
    """A trained run and a run sharing it, as written before compaction: a plain steps.csv, linked."""
    results = tmp_path / "results"
    assert run_experiments(experiments(tmp_path), str(results), show_progress=False) == {"done": 2, "shared": 1}
    trained, shared = results / "first" / "plain" / "seed-0", results / "second" / "reference" / "seed-0"
    packed = (trained / "steps.csv.gz").read_bytes()
    for directory in results.glob("*/*/seed-0"):
        if not (directory / "steps.csv.gz").is_symlink():
            (directory / "steps.csv").write_bytes(gzip.decompress((directory / "steps.csv.gz").read_bytes()))
        os.unlink(directory / "steps.csv.gz")
    os.symlink("../../../first/plain/seed-0/steps.csv", shared / "steps.csv")
    return results, trained, shared, packed


def file_bytes(root):
    return sum(os.lstat(os.path.join(d, name)).st_size for d, _, names in os.walk(root) for name in names)


def test_compact_command_compacts_finished_runs_once_and_relinks_shared_ones(tmp_path, capsys):
    results, trained, shared, packed = shared_results(tmp_path)
    faster = results / "second" / "faster" / "seed-0"
    steps_before, runs_before = load_steps(results), load_runs(results)
    plain_sizes = [os.path.getsize(d / "steps.csv") for d in (trained, faster)]
    before = file_bytes(results)
    capsys.readouterr()  # the training's lines
    assert cli.main(["compact", str(results)]) == 0
    packed_sizes = [os.path.getsize(d / "steps.csv.gz") for d in (trained, faster)]
    after = file_bytes(results)
    assert capsys.readouterr().out == (
        f"2 runs compacted: steps.csv {sum(plain_sizes):,} bytes → steps.csv.gz {sum(packed_sizes):,} bytes; "
        f"all files: {before:,} → {after:,} bytes\n"
    )
    # The link's text grows by ".gz"; each real step log shrinks from its plain size to its gzip size.
    assert before - after == sum(plain_sizes) - sum(packed_sizes) - len(".gz")
    assert (trained / "steps.csv.gz").read_bytes() == packed  # as the runner compacted it
    assert not any(os.path.lexists(d / "steps.csv") for d in (trained, shared, faster))
    assert os.readlink(shared / "steps.csv.gz") == "../../../first/plain/seed-0/steps.csv.gz"
    # Both forms read as the same frames.
    pd.testing.assert_frame_equal(load_steps(results), steps_before)
    pd.testing.assert_frame_equal(load_runs(results), runs_before)
    assert len(steps_before) == 3 * 2 * 4  # three runs of 2 epochs × 4 steps (200 digits, batches of 50)
    assert cli.main(["compact", str(results)]) == 0
    assert capsys.readouterr().out == (
        f"0 runs compacted: steps.csv 0 bytes → steps.csv.gz 0 bytes; all files: {after:,} → {after:,} bytes\n"
    )


def test_running_again_compacts_and_relinks_results_written_before(tmp_path):
    results, trained, shared, packed = shared_results(tmp_path)
    plain = collect(str(results))
    assert run_experiments(experiments(tmp_path), str(results), show_progress=False) == {"skipped": 2, "shared": 1}
    assert (trained / "steps.csv.gz").read_bytes() == packed and not os.path.lexists(shared / "steps.csv")
    assert os.readlink(shared / "steps.csv.gz") == "../../../first/plain/seed-0/steps.csv.gz"
    compacted = collect(str(results))
    for experiment, variant in (("first", "plain"), ("second", "reference"), ("second", "faster")):
        (before,), (after,) = (c[experiment].variants[variant] for c in (plain, compacted))
        assert before.steps.keys() == after.steps.keys() and len(after.steps["step"]) == 8
        for column, values in before.steps.items():
            assert values.tolist() == after.steps[column].tolist(), (experiment, variant, column)


def test_a_missing_directory_is_refused(tmp_path, capsys):
    assert cli.main(["compact", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"keras-stability compact: no such directory: {tmp_path / 'nowhere'}\n"
