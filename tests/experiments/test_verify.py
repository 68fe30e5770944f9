"""`keras-stability verify`: float32 comparison of hand-written tables, the sample, the host record,
and (slower: it trains) a run verified against itself and against a tampered copy."""

import gzip
import os

import numpy as np
import pytest

from keras_stability.cli import main
from keras_stability.cli.verification import recorded_threads
from keras_stability.experiments.verify import (
    Difference,
    RunComparison,
    TableComparison,
    compare_tables,
    provenance_differences,
    sample_runs,
)
from keras_stability.runs.provenance import VECTOR_FLAGS, cpu_description, provenance


def table(**columns):
    return {name: np.array(values, dtype=np.float64) for name, values in columns.items()}


def steps(loss, grad_norm, step=(1, 2, 3)):
    return table(epoch=[1] * len(step), step=list(step), loss=loss, grad_norm=grad_norm)


def test_equal_as_float32_though_written_differently():
    # 0.46421546 and 0.4642154574394226 (float64 text of the same float32) read back as one float32.
    committed = steps([2.5, 0.46421546, 1.0], [3.0, 2.0, 1.0])
    rerun = steps([2.5, 0.4642154574394226, 1.0], [3.0, 2.0, 1.0])
    result = compare_tables("steps.csv.gz", "step", committed, rerun)
    assert result == TableComparison("steps.csv.gz", "step", 3, None, 0.0)
    assert result.equal


def test_first_difference_and_largest():
    committed = steps([2.5, 0.46421546, 1.0], [3.0, 2.0, 1.25])
    rerun = steps([2.5, 0.4642155, 1.0], [3.0, 2.0, 1.0])
    result = compare_tables("steps.csv.gz", "step", committed, rerun)
    assert result.first == Difference(2, "loss", float(np.float32(0.46421546)), float(np.float32(0.4642155)))
    assert result.largest == 0.25
    assert not result.equal


def test_nan_equals_nan_and_a_nan_against_a_number_is_infinitely_far():
    nan = float("nan")
    assert compare_tables("m", "step", steps([nan, 1, 1], [1, 1, 1]), steps([nan, 1, 1], [1, 1, 1])).equal
    result = compare_tables("m", "step", steps([1, 1, 1], [1, nan, 1]), steps([1, 1, 1], [1, 2, 1]))
    first = result.first
    assert (first.row, first.column, first.rerun, result.largest) == (2, "grad_norm", 2.0, float("inf"))
    assert np.isnan(first.committed)


def test_a_row_in_one_table_only_is_a_difference():
    committed = steps([3.0, 2.0, 1.0], [1.0, 1.0, 1.0], step=(1, 2, 3))
    rerun = steps([3.0, 1.0, 0.5], [1.0, 1.0, 1.0], step=(1, 3, 4))
    result = compare_tables("steps.csv.gz", "step", committed, rerun)
    assert result.rows == 2 and result.largest == 0.0
    assert result.first == Difference(2, "loss", 2.0, None)


def test_other_columns_are_refused():
    with pytest.raises(ValueError, match="other columns"):
        compare_tables("m", "step", steps([1, 1, 1], [1, 1, 1]), table(step=[1, 2, 3], loss=[1, 1, 1]))


def test_one_line_per_run():
    equal = TableComparison("metrics.csv", "epoch", 10, None, 0.0)
    differs = TableComparison("steps.csv.gz", "step", 810, Difference(11, "grad_norm", 0.46421546, 0.4642155), 0.02)
    assert RunComparison("e/v/seed-4", (equal,)).line() == "e/v/seed-4  EQUAL  (metrics.csv 10 rows, as float32)"
    assert RunComparison("e/v/seed-4", (differs, equal)).line() == (
        "e/v/seed-4  DIFFERS  first: steps.csv.gz step 11 grad_norm: 0.46421546 committed, 0.4642155 rerun; "
        "largest |difference|: steps.csv.gz 0.02, metrics.csv 0"
    )
    failed = RunComparison("e/v/seed-4", problem="the rerun ended failed")
    assert failed.line() == "e/v/seed-4  FAILED  the rerun ended failed" and not failed.equal


def test_the_sample_is_reproducible_and_sorted():
    labels = ["e", "c", "a", "d", "b"]
    assert sample_runs(labels, 2, seed=0) == ["d", "e"]  # random.Random(0).sample of the sorted labels
    assert sample_runs(labels, 2, seed=1) == ["a", "b"]
    assert sample_runs(labels, 9, seed=0) == ["a", "b", "c", "d", "e"]


def test_provenance_differences_name_what_an_old_meta_json_lacks():
    committed = {"host": {"name": "vm", "machine": "x86_64", "cpus": 2}, "versions": {"tensorflow": "2.21.0"}}
    ours = {
        "host": {
            "name": "other",
            "machine": "x86_64",
            "cpus": 4,
            "onednn": False,
            "tensorflow_build": {"compiler": "x"},
        },
        "versions": {"tensorflow": "2.21.0"},
    }
    assert provenance_differences(committed, ours) == [
        "host.cpus: 2 → 4",
        "host.onednn: not recorded → False",
        "host.tensorflow_build.compiler: not recorded → x",
    ]


def test_the_runs_recorded_thread_count_is_used_when_they_agree():
    host = {"name": "vm", "intra_op_threads": 1}
    assert recorded_threads([{"host": host}, {"host": host}]) == 1
    assert recorded_threads([{"host": host}, {"host": {**host, "intra_op_threads": 2}}]) is None
    assert recorded_threads([{"host": host}, {"host": {"name": "vm"}}]) is None  # one from before the record
    assert recorded_threads([{"host": {"intra_op_threads": 0}}]) is None  # TensorFlow's default: the cpus


def test_cpu_description_reads_the_first_processor():
    cpuinfo = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni amx_tile\n\n"
        "processor\t: 1\nmodel name\t: ignored\nflags\t\t: fpu\n"
    )
    assert cpu_description(cpuinfo) == (
        "Intel(R) Xeon(R) Platinum 8480+",
        ["sse4_2", "fma", "avx", "avx2", "avx512f", "avx512_vnni", "amx_tile"],
    )
    assert cpu_description("") == (None, [])


def test_the_host_record_names_what_decides_float_results():
    host = provenance()["host"]
    assert {"processor", "vector_flags", "onednn", "onednn_env", "intra_op_threads", "tensorflow_build"} <= set(host)
    assert set(host["vector_flags"] or []) <= set(VECTOR_FLAGS) and isinstance(host["onednn"], bool)
    assert host["tensorflow_build"]["git_version"].startswith("v")


EXPERIMENT = """
name: verify_tiny
seeds: [0, 1]
baseline: plain
dataset: {name: mnist_small}
model: {name: mlp, hidden: [16]}
optimizer: {name: sgd, learning_rate: 0.1}
training: {epochs: 2, batch_size: 500}
variants:
  plain: {stabilizer: null}
"""


@pytest.mark.slow
@pytest.mark.retrains  # trains four 2-epoch MLP runs (seconds): the command end to end
def test_verify_reproduces_a_run_of_this_machine_and_finds_a_changed_value(tmp_path, capsys):
    experiment = tmp_path / "verify_tiny.yaml"
    experiment.write_text(EXPERIMENT)
    results = tmp_path / "results"
    assert main(["run", str(experiment), "--results", str(results), "--no-progress", "--no-tensorboard"]) == 0
    capsys.readouterr()
    assert main(["verify", str(results / "verify_tiny"), "--runs", "seed-9"]) == 2
    assert "--runs seed-9 should name one finished run. Received: 0 matches" in capsys.readouterr().err
    assert main(["verify", str(results / "verify_tiny"), "--runs", "plain/seed-0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"verifying the named runs of the 2 finished runs under {results / 'verify_tiny'} (")
    assert out[1].startswith("verify_tiny/plain/seed-0  EQUAL  (steps.csv.gz 34 rows, metrics.csv 2 rows")
    log = results / "verify_tiny" / "plain" / "seed-1" / "steps.csv.gz"
    lines = gzip.decompress(log.read_bytes()).decode().splitlines(keepends=True)
    epoch, step, loss, *rest = lines[5].rstrip("\n").split(",")
    lines[5] = ",".join([epoch, step, str(float(loss) + 0.5), *rest]) + "\n"
    log.write_bytes(gzip.compress("".join(lines).encode()))
    assert main(["verify", str(results / "verify_tiny"), "--runs", "verify_tiny/plain/seed-1"]) == 1
    line = capsys.readouterr().out.splitlines()[1]
    tampered = str(np.float32(float(loss) + 0.5))
    assert line.startswith(
        f"verify_tiny/plain/seed-1  DIFFERS  first: steps.csv.gz step 5 loss: {tampered} committed, {loss} rerun"
    )
    assert os.path.exists(log)


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "missing")]) == 2
    assert main(["verify", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err
