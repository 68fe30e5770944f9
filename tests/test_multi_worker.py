"""StabilizedOptimizer and the spike policy under MultiWorkerMirroredStrategy: two worker processes on
localhost (TF_CONFIG) take the one-device numbers and the same skip decision, with one all-reduce."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from multi_worker_job import GLOBAL_BATCH, build, spiky_data

import keras_stability as ks  # noqa: F401  (registers the serializable objects the job builds)

JOB = Path(__file__).with_name("multi_worker_job.py")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("workers")
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    processes = []
    for index in range(2):
        environment = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(JOB.parents[1]), os.environ.get("PYTHONPATH", "")])
        )
        environment["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        environment["CUDA_VISIBLE_DEVICES"] = ""
        processes.append(
            subprocess.Popen(
                [sys.executable, str(JOB), str(directory / f"worker-{index}.json")],
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-3000:]
    return [json.loads((directory / f"worker-{i}.json").read_text()) for i in range(2)]


def one_device():
    import tensorflow as tf

    model = build(tf.distribute.get_strategy().scope())
    x, y = spiky_data()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    return model


def test_two_workers_take_the_one_device_numbers(workers):
    model = one_device()
    assert [w["replicas"] for w in workers] == [2, 2]
    for worker in workers:
        for ours, theirs in zip(worker["weights"], model.get_weights()):
            np.testing.assert_allclose(np.array(ours), theirs, rtol=1e-5)
        np.testing.assert_allclose(worker["history"], model.optimizer.spikes.history.numpy(), rtol=1e-5)
        assert worker["iterations"] == int(model.optimizer.iterations.numpy()) == 11


def test_every_worker_takes_the_same_skip_decision(workers):
    # Batch 8's spike lies in worker 0's half only; both workers skip that step.
    assert workers[0]["skipped"] == workers[1]["skipped"] == [0.0] * 8 + [1.0] * 4


def test_one_all_reduce_per_step(workers):
    # The gradients (kernel, bias) and the spike policy's loss travel in one all-reduce, which
    # MultiWorkerMirroredStrategy packs into a single collective op: nothing else crosses the workers.
    for worker in workers:
        assert worker["gradients"] == 2
        assert worker["collectives"] == ["CollectiveReduceV2"]
