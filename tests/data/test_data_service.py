"""The tf.data service on loopback: a dispatcher and two workers in this process, a pipeline and a run read from them.

Oracles: the same pipeline read locally (the service changes where batches are made,
not what they are), the run's metrics, and the launcher's exit codes and messages.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, tiny_config

from simsiam_tf import augment, config, data
from simsiam_tf.data import service
from simsiam_tf.runs import pretrain


@pytest.fixture(scope="module")
def dispatcher():
    server = service.start_dispatcher(port=0, job_gc_timeout_ms=1000)
    address = server.target.rpartition("://")[2]
    workers = [service.start_worker(address, heartbeat_ms=200) for _ in range(2)]
    yield server.target
    for worker in workers:
        worker.stop()
    server.stop()


def test_the_service_delivers_the_local_pipelines_batches(dispatcher):
    source = data.load_source("synthetic", split="train", image_size=16, seed=0, num_examples=64)
    aug = augment.TwoViewAugment.cifar(16)
    local = list(data.make_pretrain_dataset(source, 16, aug, seed=0, start_step=3).take(64).as_numpy_iterator())
    remote = service.distribute(data.make_pretrain_dataset(source, 16, aug, seed=0, start_step=3), dispatcher, "t1")
    remote = list(remote.take(8).as_numpy_iterator())

    # Each batch is made by one worker, whole; the order of arrival is the service's (two workers
    # race, so the first eight to arrive need not be the first eight steps, only steps near them).
    def key(views):
        return views[0].tobytes()

    local_by_key = {key(v): v for v in local}
    assert len(local_by_key) == 64
    assert len({key(v) for v in remote}) == 8
    for views in remote:
        assert key(views) in local_by_key
        np.testing.assert_array_equal(views[1], local_by_key[key(views)][1])


def test_pretraining_reads_from_the_service_and_trains(dispatcher, tmp_path):
    run = tiny_config(tmp_path / "run", data_service=dispatcher, augment_on="device")
    metrics = pretrain.run(run)
    assert metrics["step"] == metrics["total_steps"] == 6
    assert np.isfinite(metrics["loss"]) and -1.0 <= metrics["loss"] <= 1.0
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-6")


def test_job_names_name_the_run_and_differ_per_step_and_pipeline(tmp_path):
    a = service.job_name(str(tmp_path / "myrun"), 0)
    assert a.startswith("simsiam-myrun-") and "step0" in a
    assert a != service.job_name(str(tmp_path / "myrun"), 30)
    assert a != service.job_name(str(tmp_path / "myrun"), 0, pipeline_id=1)


def test_bad_addresses_are_clear_errors():
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        config.replace(config.PretrainConfig(), data_service="10.0.0.5:5050").validate()
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        service.check_address("grpc://nohost")


def _launcher(*args):
    return subprocess.run(
        [sys.executable, "-m", "simsiam_tf.cli.data_worker", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )


def test_launcher_needs_exactly_one_mode():
    for args in ((), ("--dispatcher", "--dispatcher_address=127.0.0.1:5050")):
        result = _launcher(*args)
        assert result.returncode == 2
        assert "give either --dispatcher" in result.stderr
    result = _launcher("--dispatcher_address=nohostport")
    assert result.returncode == 2 and "HOST:PORT" in result.stderr


def test_launcher_serves_a_worker_that_joins_the_dispatcher(dispatcher):
    address = dispatcher.rpartition("://")[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "simsiam_tf.cli.data_worker", f"--dispatcher_address={address}", "--heartbeat_ms=200"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    try:
        line = process.stdout.readline()
        assert line.startswith(f"worker of dispatcher {address} serving at 127.0.0.1:"), line
        assert "no authentication" in process.stdout.readline()
        # Three workers now share a job: every element still comes exactly once.
        dataset = service.distribute(tf.data.Dataset.range(60), dispatcher, "launcher")
        assert sorted(dataset.as_numpy_iterator()) == list(range(60))
    finally:
        process.terminate()
        process.wait(timeout=30)
