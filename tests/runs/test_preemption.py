"""Preemption by SIGTERM (exit code 5, no step lost), signals held back during a save, exact resumes.

The in-process tests signal their own process from a Keras callback; the command-line
tests signal (or SIGKILL) a tool from outside, as a scheduler does.
"""

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.errors import PreemptedError
from simsiam_tf.runs import pretrain
from simsiam_tf.training import checkpoints, preemption
from simsiam_tf.training.preemption import PreemptionCheckpointer
from tests.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SigtermDuringStep(keras.callbacks.Callback):
    """Sends SIGTERM to this process as the step `step + 1` begins (the optimizer at `step`)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _prefix_names(model_dir):
    return [os.path.basename(p) for p in checkpoints.checkpoint_prefixes(os.path.join(model_dir, "checkpoints"))]


def _tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


# --------------------------------------------------------------------------- the handlers


def test_on_sigterm_turns_sigterm_into_a_flag_and_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGTERM)
    with preemption.on_sigterm() as stop:
        assert preemption.active() is stop and not stop.requested
        preemption.stop_if_requested(3)  # nothing requested: no error
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal_name == "SIGTERM"
        with pytest.raises(PreemptedError) as info:
            stop.stop_if_requested(7, "the test")
    assert info.value.exit_code == 5
    assert "stopped by SIGTERM at step 7 of the test" in str(info.value)
    assert "run the same command again to resume from step 7" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is before
    assert preemption.active() is None


def test_a_second_sigterm_and_a_sigint_during_a_save_wait_until_the_checkpoint_is_complete(tmp_path):
    """Both signals arrive after the checkpoint's files are written and before the `checkpoint` list
    names it: held back, they take effect once the save is complete, so nothing is half-written."""
    model = _tiny_model()
    run = checkpoints.RunCheckpoint(str(tmp_path), model=model, optimizer=model.optimizer)
    record_state = run.manager._record_state

    def signalled_record_state():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        record_state()

    run.manager._record_state = signalled_record_state
    with preemption.on_sigterm() as stop:
        with pytest.raises(KeyboardInterrupt):
            run.save(4)
        assert stop.signal_name == "SIGTERM"
    # the SIGINT came after save() returned: the checkpoint is listed, complete and holds the model
    state = tf.train.get_checkpoint_state(os.path.join(tmp_path, "checkpoints"))
    assert os.path.basename(state.model_checkpoint_path) == "ckpt-4"
    keras.utils.set_random_seed(1)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    tf.train.Checkpoint(model=other).read(state.model_checkpoint_path).expect_partial()
    for got, want in zip(other.weights, model.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_callback_does_nothing_outside_on_sigterm(tmp_path):
    model = _tiny_model()
    run = checkpoints.RunCheckpoint(str(tmp_path), model=model, optimizer=model.optimizer)
    x = np.ones((8, 4), np.float32)
    model.fit(x, x[:, :3], batch_size=4, epochs=1, verbose=0, callbacks=[PreemptionCheckpointer(run)])
    assert int(model.optimizer.iterations.numpy()) == 2 and run.latest is None


def test_a_sigterm_at_the_step_of_a_damaged_checkpoint_writes_that_checkpoint_again(tmp_path):
    """A restart that resumed past a damaged checkpoint N and is stopped at step N saves step N:
    the directory's list still names ckpt-N, which must not pass for saved (found by the fault campaign)."""
    model = _tiny_model()
    first = checkpoints.RunCheckpoint(str(tmp_path), model=model, optimizer=model.optimizer)
    x = np.ones((8, 4), np.float32)
    model.fit(x, x[:, :3], batch_size=4, epochs=1, verbose=0)  # 2 steps: the optimizer's slots exist
    first.save(2)
    model.optimizer.iterations.assign(3)
    first.save(3)
    os.remove(os.path.join(tmp_path, "checkpoints", "ckpt-3.index"))

    model = _tiny_model()
    run = checkpoints.RunCheckpoint(str(tmp_path), model=model, optimizer=model.optimizer)
    assert run.restore_latest().endswith("ckpt-2") and run.latest.endswith("ckpt-3")
    assert run.saved(2) and not run.saved(3)
    sigterm_at_step_3 = SigtermDuringStep(2)
    with preemption.on_sigterm() as requested:
        model.fit(
            x[:4],
            x[:4, :3],
            batch_size=4,
            epochs=1,
            verbose=0,
            callbacks=[sigterm_at_step_3, PreemptionCheckpointer(run)],
        )
    assert requested.saved.endswith("ckpt-3") and run.saved(3)
    assert checkpoints.resolve_checkpoint(str(tmp_path)).endswith("ckpt-3")  # whole again: its index reads


# --------------------------------------------------------------------------- a SIGTERM in a pretraining run


def _fingerprint(*tensors):
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(np.ascontiguousarray(t.numpy()).tobytes())
    return digest.hexdigest()


def _recording_fit(seen):
    """pretrain's fit_from_step, with every batch's content recorded in `seen` under its step."""
    fit = pretrain.fit_from_step

    def recording(model, make_dataset, start_step, *args):
        def make_recorded(step):
            def record(i, *tensors):
                seen.setdefault(int(i), _fingerprint(*tensors))
                return np.int64(0)

            def note(i, batch):
                done = tf.py_function(record, [i, *tf.nest.flatten(batch)], tf.int64)
                with tf.control_dependencies([done]):
                    return tf.nest.map_structure(tf.identity, batch)

            return make_dataset(step).enumerate(start=step).map(note)

        seen.setdefault("starts", []).append(start_step)
        return fit(model, make_recorded, start_step, *args)

    return recording


@pytest.mark.slow
def test_sigterm_mid_step_saves_that_step_exits_5_and_the_restart_sees_the_same_batches(tmp_path, monkeypatch):
    # 48 images in batches of 16 over 3 epochs: 9 steps; periodic checkpoints only at step 100
    changes = {"epochs": 3, "checkpoint_every_steps": 100}
    straight, stopped = {}, {}
    monkeypatch.setattr(pretrain, "fit_from_step", _recording_fit(straight))
    pretrain.run(tiny_config(tmp_path / "straight", **changes))

    monkeypatch.setattr(pretrain, "fit_from_step", _recording_fit(stopped))
    handler = signal.getsignal(signal.SIGTERM)
    model_dir = tmp_path / "preempted"
    with pytest.raises(PreemptedError) as info:
        pretrain.run(tiny_config(model_dir, **changes), callbacks=[SigtermDuringStep(4)])
    assert signal.getsignal(signal.SIGTERM) is handler
    # the step in flight (the 5th) finished and was saved: the only checkpoint, as periodic ones come at 100
    assert info.value.exit_code == 5
    assert f"stopped by SIGTERM at step 5 of pretraining: its checkpoint {model_dir}/checkpoints/ckpt-5 is saved" in (
        str(info.value)
    )
    assert _prefix_names(model_dir) == ["ckpt-5"]
    reader = tf.train.load_checkpoint(str(model_dir / "checkpoints" / "ckpt-5"))
    assert int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 5
    assert not (model_dir / "metrics.json").exists()

    stopped.pop("starts")
    resumed = {}
    monkeypatch.setattr(pretrain, "fit_from_step", _recording_fit(resumed))
    metrics = pretrain.run(tiny_config(model_dir, **changes))
    assert resumed.pop("starts") == [5]  # resumed at the step saved: no step lost, none repeated
    assert metrics["step"] == 9
    # every step saw the batch of the uninterrupted run, before the SIGTERM and after the restart
    for step in range(9):
        before_or_after = stopped if step < 5 else resumed
        assert before_or_after[step] == straight[step], step
    assert len({straight[step] for step in range(9)}) == 9  # the fingerprints tell batches apart


# --------------------------------------------------------------------------- from outside, through the tool

# 32 synthetic 16 px images in batches of 8: 4 steps per epoch, 6 epochs.
TOOL_FLAGS = [
    "--dataset=synthetic",
    "--num_train_examples=32",
    "--image_size=16",
    "--backbone=resnet18_cifar",
    "--width_multiplier=0.0625",
    "--dim=32",
    "--pred_dim=16",
    "--batch_size=8",
    "--epochs=6",
    "--evaluate=false",
    "--knn_every=0",
    "--export=false",
    "--verbose=0",
    "--seed=5",
    "--deterministic",
]
TOOL_STEPS = 24


def _start(model_dir, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "simsiam_tf.cli.pretrain", f"--model_dir={model_dir}", *TOOL_FLAGS, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT),
    )


def _finish(process, timeout=300):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, out, err


def _wait_for(path, process, timeout=240):
    deadline = time.time() + timeout
    while not glob.glob(str(path)):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.005)


def _values(prefix):
    reader = tf.train.load_checkpoint(str(prefix))
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith(("model/", "optimizer/"))]
    return {n: reader.get_tensor(n) for n in names}


def _assert_bit_for_bit(prefix, reference):
    got, want = _values(prefix), _values(reference)
    assert sorted(got) == sorted(want)
    # the optimiser's slots are compared too, not only its step count and learning rate
    assert len([n for n in want if n.startswith("optimizer/_variables/")]) > 2, sorted(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("straight") / "run"
    code, _, err = _finish(_start(model_dir, "--checkpoint_every_steps=1000"))
    assert code == 0, err[-3000:]
    return model_dir / "checkpoints" / f"ckpt-{TOOL_STEPS}"


@pytest.mark.slow
def test_sigterm_from_outside_exits_5_and_the_deterministic_restart_equals_the_uninterrupted_run(
    tmp_path, uninterrupted
):
    model_dir = tmp_path / "run"
    process = _start(model_dir, "--checkpoint_every_steps=1000")
    _wait_for(model_dir / "history.json", process)  # the first epoch ended: training is under way
    process.send_signal(signal.SIGTERM)
    code, _, err = _finish(process)
    assert code == 5, err[-3000:]
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    (name,) = _prefix_names(model_dir)  # the only checkpoint: the one written on the way out
    step = int(name.split("-")[1])
    assert 4 <= step < TOOL_STEPS
    assert line == (
        f"error: stopped by SIGTERM at step {step} of pretraining: its checkpoint "
        f"{model_dir}/checkpoints/ckpt-{step} is saved; run the same command again to resume from step {step}"
    )
    assert json.loads((model_dir / "history.json").read_text())[-1]["step"] <= step

    code, _, err = _finish(_start(model_dir, "--checkpoint_every_steps=1000"))
    assert code == 0, err[-3000:]
    assert json.loads((model_dir / "metrics.json").read_text())["step"] == TOOL_STEPS
    _assert_bit_for_bit(model_dir / "checkpoints" / f"ckpt-{TOOL_STEPS}", uninterrupted)


@pytest.mark.slow
def test_deterministic_run_killed_mid_epoch_and_resumed_equals_the_uninterrupted_run_bit_for_bit(
    tmp_path, uninterrupted
):
    model_dir = tmp_path / "run"
    process = _start(model_dir, "--checkpoint_every_steps=3")
    _wait_for(model_dir / "checkpoints" / "ckpt-9.index", process)  # step 9: inside the third epoch
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    code, _, err = _finish(_start(model_dir, "--checkpoint_every_steps=3"))
    assert code == 0, err[-3000:]
    _assert_bit_for_bit(model_dir / "checkpoints" / f"ckpt-{TOOL_STEPS}", uninterrupted)
