"""Faults injected into real runs: damaged checkpoints, NaN state, divergence, concurrent runs, kills, bad restarts.

The first part injects them into checkpoints written by a tiny Keras model; the second
through the command-line tools on the tiny SimSiam run of the fault reports.
"""

import glob
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import builders
from simsiam_tf import config as config_lib
from simsiam_tf.errors import DeadEncoderError, NonFiniteStateError, RunError
from simsiam_tf.runs import lock, pretrain
from simsiam_tf.training import checkpoints, finite
from simsiam_tf.training.callbacks import StepCheckpointer

STEPS = (1, 2, 3)


def _build(width=16, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(width),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(4),
        ]
    )
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    model.compile(optimizer=optimizer, loss="mse")
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 8)).astype(np.float32), rng.normal(size=(16, 4)).astype(np.float32)


def _state(model, optimizer):
    return [np.array(v.numpy()) for v in model.variables + optimizer.variables]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A run directory with checkpoints 1, 2, 3 of a trained model, and the state each holds."""
    run_dir = str(tmp_path_factory.mktemp("pristine") / "run")
    model, optimizer = _build()
    run = checkpoints.RunCheckpoint(run_dir, model=model, optimizer=optimizer)
    x, y = _batch()
    states = {}
    for step in STEPS:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        assert int(optimizer.iterations.numpy()) == step
        run.save(step)
        states[step] = _state(model, optimizer)
    return run_dir, states


@pytest.fixture
def run_dir(pristine, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(pristine[0], copy)
    return copy


def _prefix(run_dir, step):
    return os.path.join(run_dir, checkpoints.CHECKPOINT_SUBDIR, f"ckpt-{step}")


def _data_file(prefix):
    (path,) = glob.glob(prefix + ".data-*")
    return path


def _truncate_data(prefix):
    path = _data_file(prefix)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return path


def _truncate_index(prefix):
    path = prefix + ".index"
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return path


def _zero_middle_of_data(prefix):
    path = _data_file(prefix)
    with open(path, "r+b") as f:
        raw = bytearray(f.read())
        middle = len(raw) // 2
        assert any(raw[middle : middle + 256]), "the region to zero must hold non-zero bytes"
        f.seek(middle)
        f.write(bytes(256))
    return path


def _remove_data(prefix):
    path = _data_file(prefix)
    os.remove(path)
    return path


def _bad_magic_index(prefix):
    path = prefix + ".index"
    with open(path, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(bytes(8))  # the sstable footer's magic number
    return path


DAMAGES = {
    "truncated_data": _truncate_data,
    "truncated_index": _truncate_index,
    "zeroed_data": _zero_middle_of_data,
    "missing_data": _remove_data,
    "bad_magic_index": _bad_magic_index,
}


def _assert_state(model, optimizer, expected):
    for got, want in zip(_state(model, optimizer), expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_resume_falls_back_to_the_previous_checkpoint_with_a_warning_naming_the_file(damage, run_dir, pristine, caplog):
    damaged = DAMAGES[damage](_prefix(run_dir, 3))
    model, optimizer = _build(seed=7)  # other initial values, so a partial restore would show
    run = checkpoints.RunCheckpoint(run_dir, model=model, optimizer=optimizer)
    with caplog.at_level(logging.WARNING):
        restored = run.restore_latest()
    assert restored == _prefix(run_dir, 2)
    assert int(optimizer.iterations.numpy()) == 2
    _assert_state(model, optimizer, pristine[1][2])
    assert f"skipping the damaged checkpoint {_prefix(run_dir, 3)}" in caplog.text
    assert damaged in caplog.text


def test_restore_with_nothing_readable_is_one_line_naming_the_directory(run_dir):
    for step in STEPS:
        _truncate_data(_prefix(run_dir, step))
    model, optimizer = _build()
    with pytest.raises(RunError) as info:
        checkpoints.RunCheckpoint(run_dir, model=model, optimizer=optimizer).restore_latest()
    message = str(info.value)
    assert "\n" not in message
    assert (
        f"no usable checkpoint in {os.path.join(run_dir, checkpoints.CHECKPOINT_SUBDIR)}: all 3 are damaged" in message
    )
    assert "ckpt-3.data-00000-of-00001: IndexError" in message


def test_a_checkpoint_of_another_architecture_is_a_mismatch_not_a_fallback(run_dir, caplog):
    model, optimizer = _build(width=32)
    with caplog.at_level(logging.WARNING), pytest.raises(RunError) as info:
        checkpoints.RunCheckpoint(run_dir, model=model, optimizer=optimizer).restore_latest()
    assert f"cannot resume from {_prefix(run_dir, 3)!r}" in str(info.value)
    assert "--width_multiplier" in str(info.value)
    assert "skipping" not in caplog.text


def test_training_resumed_after_a_fallback_continues_from_the_older_step_and_rewrites_the_damaged_one(
    run_dir, pristine
):
    _zero_middle_of_data(_prefix(run_dir, 3))
    model, optimizer = _build(seed=3)
    run = checkpoints.RunCheckpoint(run_dir, model=model, optimizer=optimizer)
    assert run.restore_latest() == _prefix(run_dir, 2)
    x, y = _batch()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert int(optimizer.iterations.numpy()) == 3
    run.save(3)
    # the same step from the same state: the uninterrupted run's checkpoint 3, up to float rounding of a new trace
    for got, want in zip(_state(model, optimizer), pristine[1][3], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    again, again_optimizer = _build(seed=5)
    assert checkpoints.RunCheckpoint(run_dir, model=again, optimizer=again_optimizer).restore_latest() == _prefix(
        run_dir, 3
    )
    _assert_state(again, again_optimizer, _state(model, optimizer))


@pytest.mark.parametrize("damage", ["truncated_data", "truncated_index"])
def test_weights_only_load_from_a_run_directory_falls_back(damage, run_dir, pristine, caplog):
    DAMAGES[damage](_prefix(run_dir, 3))
    model, _ = _build(seed=9)
    with caplog.at_level(logging.WARNING):
        prefix = checkpoints.load_weights(run_dir, what="test model", model=model)
    assert prefix == _prefix(run_dir, 2)
    for got, want in zip([v.numpy() for v in model.variables], pristine[1][2], strict=False):
        np.testing.assert_array_equal(got, want)
    assert "skipping the damaged checkpoint" in caplog.text


def test_weights_only_load_of_a_damaged_prefix_named_explicitly_is_a_one_line_error(run_dir):
    damaged = _truncate_data(_prefix(run_dir, 3))
    model, _ = _build()
    with pytest.raises(RunError) as info:
        checkpoints.load_weights(_prefix(run_dir, 3), model=model)
    assert "\n" not in str(info.value) and damaged in str(info.value)


def test_resolve_checkpoint_skips_a_newest_checkpoint_whose_index_is_damaged(run_dir):
    _bad_magic_index(_prefix(run_dir, 3))
    assert checkpoints.resolve_checkpoint(run_dir) == _prefix(run_dir, 2)


def test_nan_weights_during_training_stop_the_save_and_name_the_newest_finite_checkpoint(run_dir, pristine):
    model, optimizer = _build()
    run = checkpoints.RunCheckpoint(run_dir, model=model, optimizer=optimizer)
    run.restore_latest()
    optimizer.learning_rate.assign(float("nan"))  # the loss of the step is finite, the weights after it are not
    x, y = _batch()
    with pytest.raises(NonFiniteStateError) as info:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[StepCheckpointer(run, 1)])
    message = str(info.value)
    assert "at step 4" in message and f"the newest finite checkpoint is {_prefix(run_dir, 3)}" in message
    assert [os.path.basename(p) for p in run.prefixes] == ["ckpt-3", "ckpt-2", "ckpt-1"]
    fresh, fresh_optimizer = _build(seed=1)
    assert checkpoints.RunCheckpoint(run_dir, model=fresh, optimizer=fresh_optimizer).restore_latest() == _prefix(
        run_dir, 3
    )
    _assert_state(fresh, fresh_optimizer, pristine[1][3])


def test_a_second_run_on_a_locked_directory_fails_before_touching_its_checkpoints(run_dir):
    before = sorted(os.listdir(os.path.join(run_dir, checkpoints.CHECKPOINT_SUBDIR)))
    with (
        lock.RunLock(run_dir, command="first run"),
        pytest.raises(RunError, match=r"in use by pid \d+ on host .* \(first run\)"),
        lock.RunLock(run_dir),
    ):
        checkpoints.RunCheckpoint(run_dir, model=_build()[0]).save(99)
    assert sorted(os.listdir(os.path.join(run_dir, checkpoints.CHECKPOINT_SUBDIR))) == before


# --------------------------------------------------------------------------- through the command-line tools

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The tiny run of the fault reports: 32 synthetic 16 px images, 4 steps per epoch.
T = [
    "--dataset=synthetic",
    "--num_train_examples=32",
    "--num_eval_examples=32",
    "--image_size=16",
    "--backbone=resnet18_cifar",
    "--width_multiplier=0.0625",
    "--dim=32",
    "--pred_dim=16",
    "--batch_size=8",
    "--epochs=2",
    "--evaluate=false",
    "--export=false",
    "--checkpoint_every_steps=1",
    "--verbose=0",
]
T_STEPS = 8


def _start(module, *args):
    return subprocess.Popen(
        [sys.executable, "-m", f"simsiam_tf.cli.{module}", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT),
    )


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _tool(module, *args):
    return _finish(_start(module, *args))


def _error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert lines, result.stderr[-3000:]
    return lines[-1]


def _non_finite_checkpoints(run_dir):
    """{checkpoint name: names of its NaN/inf tensors} of every checkpoint left in `run_dir`."""
    return {
        os.path.basename(p): finite.checkpoint_non_finite(p)
        for p in checkpoints.checkpoint_prefixes(os.path.join(run_dir, checkpoints.CHECKPOINT_SUBDIR))
    }


def _tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {
        key: reader.get_tensor(key)
        for key, dtype in reader.get_variable_to_dtype_map().items()
        if dtype.is_floating and key.startswith(("model/", "optimizer/"))
    }


def _assert_same_weights(prefix, reference_prefix):
    got, want = _tensors(prefix), _tensors(reference_prefix)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)


def _files(directory):
    """{relative path: bytes} of every file under `directory`."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), directory)] = f.read()
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny run, uninterrupted: checkpoints 6, 7 and 8 (the last three) and its flags.cfg."""
    run_dir = str(tmp_path_factory.mktemp("tiny") / "run")
    result = _tool("pretrain", *T, f"--model_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [os.path.basename(p) for p in checkpoints.checkpoint_prefixes(os.path.join(run_dir, "checkpoints"))] == [
        "ckpt-8",
        "ckpt-7",
        "ckpt-6",
    ]
    return run_dir


@pytest.fixture
def tiny_copy(tiny_run, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(tiny_run, copy)
    return copy


@pytest.mark.slow
def test_divergence_exits_1_and_leaves_no_non_finite_checkpoint(tmp_path):
    nan_dir, huge_dir = str(tmp_path / "nan_wd"), str(tmp_path / "huge_lr")
    nan_wd = _start("pretrain", *T, f"--model_dir={nan_dir}", "--weight_decay=nan")
    huge_lr = _start("pretrain", *T, f"--model_dir={huge_dir}", "--base_lr=1e6", "--epochs=3")
    # A NaN weight decay never reaches training: the flag check refuses it, and nothing is written.
    result = _finish(nan_wd)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "weight_decay must be a finite number" in _error_line(result)
    assert not os.path.exists(nan_dir)
    # A learning rate that blows up the weights stops the run at the first non-finite state.
    result = _finish(huge_lr)
    assert result.returncode == 1, result.stderr[-3000:]
    message = _error_line(result)
    assert "NaN/inf" in message and "--base_lr" in message
    left = _non_finite_checkpoints(huge_dir)
    assert all(not bad for bad in left.values()), left
    assert not os.path.exists(os.path.join(huge_dir, "metrics.json"))
    # the message names the checkpoint a restart resumes from, and it is a finite one
    if left:
        newest = checkpoints.checkpoint_prefixes(os.path.join(huge_dir, "checkpoints"))[0]
        assert f"the newest finite checkpoint is {newest}, and a restart resumes from it" in message
    else:
        assert "there is no finite checkpoint" in message and "a restart starts afresh" in message


@pytest.mark.slow
def test_pretrain_resumes_from_the_previous_checkpoint_when_the_latest_is_damaged(tiny_copy, tiny_run):
    damaged = _truncate_data(_prefix(tiny_copy, T_STEPS))
    result = _tool("pretrain", *T, f"--model_dir={tiny_copy}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipping the damaged checkpoint {_prefix(tiny_copy, T_STEPS)}" in result.stderr
    assert damaged in result.stderr
    assert f"restored the older checkpoint {_prefix(tiny_copy, T_STEPS - 1)}" in result.stderr
    assert "Traceback" not in result.stderr
    # step 8 trained again from checkpoint 7: the weights of the uninterrupted run
    _assert_same_weights(_prefix(tiny_copy, T_STEPS), _prefix(tiny_run, T_STEPS))


@pytest.mark.slow
def test_linear_and_export_read_the_previous_checkpoint_when_the_latest_is_damaged(tiny_run, tmp_path):
    for_linear, for_export = str(tmp_path / "for_linear"), str(tmp_path / "for_export")
    shutil.copytree(tiny_run, for_linear)
    shutil.copytree(tiny_run, for_export)
    damaged_index = _truncate_index(_prefix(for_linear, T_STEPS))
    zeroed_data = _zero_middle_of_data(_prefix(for_export, T_STEPS))
    linear = _start(
        "linear",
        f"--init_from={for_linear}",
        f"--model_dir={tmp_path / 'linear'}",
        "--epochs=1",
        "--compare_baselines=false",
        "--verbose=0",
    )
    exported = _finish(_start("export", f"--model_dir={for_export}"))
    linear = _finish(linear)

    assert linear.returncode == 0, linear.stderr[-3000:]
    # once: the early check (before anything is written) and the load do not both say it
    assert linear.stderr.count(f"skipping the damaged checkpoint {_prefix(for_linear, T_STEPS)}") == 1
    assert damaged_index in linear.stderr and "Traceback" not in linear.stderr
    metrics = json.loads((tmp_path / "linear" / "metrics.json").read_text())
    assert metrics["init_from"] == _prefix(for_linear, T_STEPS - 1)

    assert exported.returncode == 0, exported.stderr[-3000:]
    assert zeroed_data in exported.stderr and "DataLossError" in exported.stderr
    assert exported.stderr.count(f"skipping the damaged checkpoint {_prefix(for_export, T_STEPS)}") == 1
    assert f"({_prefix(for_export, T_STEPS - 1)})" in exported.stdout
    assert os.path.isdir(os.path.join(for_export, "export", "saved_model"))


@pytest.mark.slow
def test_a_second_run_on_the_same_directory_exits_1_at_once_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    holder = _start("pretrain", *T, f"--model_dir={run_dir}", "--epochs=1000")
    try:
        deadline = time.time() + 300
        while not (run_dir / lock.LOCK_FILE).exists() or not (run_dir / lock.LOCK_FILE).read_text().strip():
            assert holder.poll() is None, holder.communicate()[1][-3000:]
            assert time.time() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        second = _tool("pretrain", *T, f"--model_dir={run_dir}", "--epochs=1000")
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.communicate()
    assert second.returncode == 1, second.stderr[-3000:]
    message = _error_line(second)
    assert f"the run directory {run_dir} is in use by pid {holder.pid} on host {socket.gethostname()}" in message
    assert "another --model_dir" in message


@pytest.mark.slow
def test_a_failed_restart_or_start_changes_nothing(tiny_copy, tmp_path):
    before = _files(tiny_copy)
    new_dir = tmp_path / "outputs" / "new"
    other_width = _start("pretrain", *T, f"--model_dir={tiny_copy}", "--width_multiplier=0.125")
    missing_init = _start("pretrain", *T, f"--model_dir={new_dir}", f"--init_from={tmp_path / 'missing'}")
    other_width, missing_init = _finish(other_width), _finish(missing_init)

    assert other_width.returncode == 1, other_width.stderr[-3000:]
    message = _error_line(other_width)
    assert "--width_multiplier=0.0625" in message and "--width_multiplier=0.125" in message
    assert f"--flagfile={os.path.join(tiny_copy, 'flags.cfg')}" in message and "new --model_dir" in message
    assert _files(tiny_copy) == before  # flags.cfg byte-identical, and every other file too

    assert missing_init.returncode == 1, missing_init.stderr[-3000:]
    assert "no checkpoint found at" in _error_line(missing_init)
    assert not (tmp_path / "outputs").exists()


def test_the_end_of_pretraining_refuses_a_finite_encoder_that_embeds_every_image_alike():
    config = config_lib.replace(
        config_lib.PretrainConfig(),
        **{"data.num_train_examples": 32, "data.image_size": 16, "model.width_multiplier": 0.0625},
    )
    encoder = builders.build_encoder(config.model, tf.distribute.get_strategy(), 0)
    source = builders.load_train_source(config)
    assert pretrain.check_encoder_alive(config, encoder, source) > 0.01
    # What --base_lr=1e6 did to the BatchNorm moving variances, short of inf: every image maps to beta.
    for variable in encoder.weights:
        if variable.path.endswith("moving_variance"):
            variable.assign(np.full(variable.shape, 1e30, np.float32))
    with pytest.raises(DeadEncoderError, match="gives the same embedding for every evaluation image"):
        pretrain.check_encoder_alive(config, encoder, source)
