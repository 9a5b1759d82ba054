"""Strategies, SyncBN, multi-worker training and checkpoints, and surviving SIGKILL.

The tests that need their own TensorFlow device setup (two logical CPUs, a TF_CONFIG
cluster) or a process to kill run tests/dist_worker.py or the CLI in subprocesses.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.training import distribute

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "dist_worker.py")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
ENV.pop("TF_CONFIG", None)


def _replicas(n):
    return types.SimpleNamespace(num_replicas_in_sync=n)


def _start(command, log, env=ENV, **kwargs):
    """Starts a process whose stderr (and stdout, unless piped) go to the file `log`."""
    with open(log, "w") as f:
        kwargs.setdefault("stdout", f)
        return subprocess.Popen(command, cwd=ROOT, env=env, text=True, stderr=f, **kwargs)


def _worker(log, *args, **kwargs):
    return _start([sys.executable, WORKER, *map(str, args)], log, **kwargs)


def _wait(process, log, returncode=0, timeout=480):
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == returncode, open(log).read()[-3000:]


# --------------------------------------------------------------------------- factory


def test_strategy_names():
    assert distribute.get_strategy("default") is tf.distribute.get_strategy()
    # No GPU here: auto is the default strategy, one_device the CPU.
    assert distribute.get_strategy("auto") is tf.distribute.get_strategy()
    one = distribute.get_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy) and one.num_replicas_in_sync == 1
    assert "CPU" in one.extended.worker_devices[0].upper()


def test_unknown_strategy_and_tpu_without_address_are_clear_errors():
    with pytest.raises(
        ValueError,
        match="unknown strategy 'horovod'; choose one of auto, default, one_device, "
        "mirrored, multi_worker_mirrored, tpu",
    ):
        distribute.get_strategy("horovod")
    for missing in (None, ""):
        with pytest.raises(ValueError, match="strategy 'tpu' needs a TPU address"):
            distribute.get_strategy("tpu", tpu=missing)


def test_multi_worker_errors_name_the_cause(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster: nope")
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON like"):
        distribute.get_strategy("multi_worker_mirrored")
    # A one-worker cluster, but TensorFlow has started its devices already.
    tf.constant(0.0) + 1.0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]}, "task": {"type": "worker", "index": 0}})
    )
    with pytest.raises(RuntimeError, match="must be created before TensorFlow starts its devices"):
        distribute.get_strategy("multi_worker_mirrored")


def test_per_replica_batch_size():
    assert distribute.per_replica_batch_size(512, tf.distribute.get_strategy()) == 512
    assert distribute.per_replica_batch_size(512, _replicas(8)) == 64
    with pytest.raises(
        ValueError,
        match=r"batch_size 100 \(the global batch\) is not divisible by the 8 "
        r"replicas .* use a multiple of 8, e\.g\. 96 or 104",
    ):
        distribute.per_replica_batch_size(100, _replicas(8))
    with pytest.raises(ValueError, match="use a multiple of 8, e.g. 8$"):
        distribute.per_replica_batch_size(4, _replicas(8))


def test_sync_bn_auto_follows_the_replica_count():
    assert distribute.resolve_sync_bn("auto", _replicas(1)) is False
    assert distribute.resolve_sync_bn("auto", _replicas(2)) is True
    assert distribute.resolve_sync_bn("true", _replicas(1)) is True
    assert distribute.resolve_sync_bn("false", _replicas(8)) is False
    with pytest.raises(ValueError, match="sync_bn must be auto, true or false"):
        distribute.resolve_sync_bn("yes", _replicas(2))


def test_single_process_writes_to_model_dir(tmp_path):
    strategy = tf.distribute.get_strategy()
    assert distribute.is_chief(strategy)
    assert distribute.write_dir_for(str(tmp_path), strategy) == str(tmp_path)
    distribute.remove_write_dir(str(tmp_path), str(tmp_path))
    assert tmp_path.is_dir()
    distribute.check_same_on_all_workers(strategy, 7, "the step")


def test_precision_names():
    with pytest.raises(ValueError, match="precision must be float32, mixed_float16 or mixed_bfloat16"):
        distribute.set_precision("float16")
    distribute.set_precision("mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"


# --------------------------------------------------------------------------- replicas


@pytest.mark.slow
def test_mirrored_two_replicas_with_sync_bn_match_one_device(tmp_path):
    """Global batch 8 on one device == 2 x 4 under MirroredStrategy with SyncBN, step by step."""
    out, log = tmp_path / "mirrored.npz", tmp_path / "mirrored.log"
    _wait(_worker(log, "mirrored", out), log)
    result = np.load(out)
    assert int(result["replicas"]) == 2
    assert len(result["synchronized"]) == 23 and result["synchronized"].all()
    assert list(result["iterations"]) == [3, 3, 3]
    np.testing.assert_allclose(result["synced_losses"], result["single_losses"], atol=1e-4)

    count = len([k for k in result.files if k.startswith("initial_")])
    single = [result[f"single_{i}"] for i in range(count)]
    synced = [result[f"synced_{i}"] for i in range(count)]
    unsynced = [result[f"unsynced_{i}"] for i in range(count)]
    initial = [result[f"initial_{i}"] for i in range(count)]
    for a, b in zip(single, synced):
        np.testing.assert_allclose(b, a, atol=1e-4)
    assert max(np.abs(a - b).max() for a, b in zip(single, initial)) > 0.05
    # Without SyncBN each replica normalises with its half batch's statistics: another run.
    assert max(np.abs(a - b).max() for a, b in zip(single, unsynced)) > 1e-2
    assert np.abs(result["unsynced_losses"] - result["single_losses"]).max() > 1e-3


def test_python_api_sync_bn_defaults_to_the_strategy_in_scope(tmp_path):
    """SimSiam(...) and build_backbone(...) without sync_bn: synchronized under 2 replicas, not on one device."""
    out, log = tmp_path / "sync_bn.npz", tmp_path / "sync_bn.log"
    _wait(_worker(log, "sync_bn_default", out), log)
    result = np.load(out)
    assert int(result["replicas"]) == 2
    # ResNet-18: stem + 8 blocks x 2 + 3 downsample BN = 20; projector 2, predictor 1.
    assert len(result["two_replicas"]) == 23 and result["two_replicas"].all()
    assert len(result["default_strategy"]) == 23 and not result["default_strategy"].any()
    assert len(result["one_device"]) == 23 and not result["one_device"].any()


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_two_multi_worker_processes_train_and_checkpoint_together(tmp_path):
    """Two local workers (TF_CONFIG on loopback): same weights, chief-only checkpoints, restore."""
    model_dir = tmp_path / "run"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes, logs = [], [tmp_path / f"worker{i}.log" for i in range(2)]
    try:
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            processes.append(
                _worker(
                    logs[index], "multi_worker", tmp_path, model_dir, 3, env=dict(ENV, TF_CONFIG=json.dumps(tf_config))
                )
            )
        for process, log in zip(processes, logs):
            _wait(process, log)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    chief, worker = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    count = len([k for k in chief.files if k.startswith("var_")])

    assert bool(chief["chief"]) and not bool(worker["chief"])
    for r in (chief, worker):
        assert int(r["replicas"]) == 2 and int(r["per_replica"]) == 4 and bool(r["sync_bn"])
        assert str(r["restored"]) == "None" and int(r["start"]) == 0 and int(r["iterations"]) == 3
    np.testing.assert_array_equal(chief["losses"], worker["losses"])
    for i in range(count):
        np.testing.assert_array_equal(chief[f"var_{i}"], worker[f"var_{i}"])
    # The chief wrote the run's checkpoints; the other worker's went to temporary
    # directories, now gone, and nothing of them is in the run directory.
    assert str(chief["write_dir"]) == str(model_dir)
    assert not worker["write_dirs_left"].any()
    assert os.listdir(model_dir) == ["checkpoints"]
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-3")
    # Every worker restores the chief's checkpoint.
    for r in (chief, worker):
        assert str(r["again_restored"]).endswith("ckpt-3") and int(r["again_start"]) == 3
        for i in range(count):
            np.testing.assert_array_equal(r[f"again_{i}"], chief[f"var_{i}"])
        # Workers that disagree (one did not see the chief's checkpoint) all stop, saying why.
        assert str(r["disagreement"]).startswith("the workers disagree on the step to resume from: [10, 11]")


# --------------------------------------------------------------------------- fault tolerance


@pytest.mark.slow
def test_checkpoints_survive_sigkill_at_random_times(tmp_path):
    """Killed at random moments, often mid-save, a run always restarts from an intact checkpoint."""
    model_dir, log = tmp_path / "run", tmp_path / "loop.log"
    rng = random.Random(0)
    last_saved = 0
    for _ in range(3):
        process = _worker(log, "checkpoint_loop", model_dir, stdout=subprocess.PIPE)
        try:
            first = process.stdout.readline().split()
            assert first[:1] == ["restored"], open(log).read()[-3000:]
            # Every save that returned is on disk: the restart may only be ahead of it.
            assert int(first[1]) >= last_saved
            assert process.stdout.readline().startswith("saved")
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            process.send_signal(signal.SIGKILL)
            out, _ = process.communicate(timeout=60)
        saved = [int(line.split()[1]) for line in out.splitlines() if line.startswith("saved")]
        last_saved = max(saved + [int(first[1]) + 1])
    process = _worker(log, "checkpoint_loop", model_dir, stdout=subprocess.PIPE)
    try:
        first = process.stdout.readline().split()
        assert first[:1] == ["restored"] and int(first[1]) >= last_saved, open(log).read()[-3000:]
    finally:
        process.kill()
        process.communicate(timeout=60)
