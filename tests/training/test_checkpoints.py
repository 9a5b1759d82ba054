import json
import os
import stat

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.errors import DeadEncoderError, NonFiniteStateError, RunError
from simsiam_tf.training import checkpoints
from simsiam_tf.training.callbacks import NaNGuard
from simsiam_tf.training.files import write_json_atomic, write_text_atomic
from simsiam_tf.training.finite import check_embeddings_alive


def _tiny(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization(), keras.layers.Dense(2)]
    )
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    return model, optimizer


# --- atomic writes ---------------------------------------------------------------------------------------------


def test_write_text_atomic_replaces_the_file_with_normal_permissions_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "flags.cfg"
    path.write_text("--old=1\n")
    write_text_atomic(str(path), "--base_lr=0.05\n")
    assert path.read_text() == "--base_lr=0.05\n"
    assert os.listdir(tmp_path) == ["flags.cfg"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_write_text_atomic_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "flags.cfg"
    path.write_text("--old=1\n")

    with pytest.raises(TypeError):
        write_text_atomic(str(path), b"bytes are not text")  # fails inside the write
    assert path.read_text() == "--old=1\n"
    assert os.listdir(tmp_path) == ["flags.cfg"]


def test_write_json_atomic_round_trips(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    write_json_atomic(str(path), {"b": 1, "a": [0.5]})
    assert json.loads(path.read_text()) == {"a": [0.5], "b": 1}


# --- the list of checkpoints ------------------------------------------------------------------------------------


def _saved_run(tmp_path, steps=(1, 2, 3), value_of_step=float):
    model, optimizer = _tiny()
    run = checkpoints.RunCheckpoint(str(tmp_path), model=model, optimizer=optimizer)
    for step in steps:
        for v in model.variables:
            v.assign(np.full(v.shape, value_of_step(step), np.float32))
        optimizer.iterations.assign(step)
        run.save(step)
    return run, model, optimizer


def test_checkpoint_prefixes_are_newest_first_by_number_not_by_name(tmp_path):
    run, _, _ = _saved_run(tmp_path, steps=(9, 10, 11))
    names = [os.path.basename(p) for p in checkpoints.checkpoint_prefixes(run.directory)]
    assert names == ["ckpt-11", "ckpt-10", "ckpt-9"]


def test_checkpoint_prefixes_survive_a_garbled_state_file_and_a_moved_directory(tmp_path):
    _run, _, _ = _saved_run(tmp_path / "a")
    os.rename(tmp_path / "a", tmp_path / "b")
    moved = str(tmp_path / "b" / checkpoints.CHECKPOINT_SUBDIR)
    assert checkpoints.checkpoint_prefixes(moved) == [os.path.join(moved, f"ckpt-{n}") for n in (3, 2, 1)]
    with open(os.path.join(moved, "checkpoint"), "wb") as f:
        f.write(b"\xff\xfe\x00 not a state file")
    assert checkpoints.checkpoint_prefixes(moved) == [os.path.join(moved, f"ckpt-{n}") for n in (3, 2, 1)]


def test_checkpoint_prefixes_of_an_empty_or_missing_directory(tmp_path):
    assert checkpoints.checkpoint_prefixes(str(tmp_path)) == []
    assert checkpoints.checkpoint_prefixes(str(tmp_path / "absent")) == []


# --- no non-finite state is written -----------------------------------------------------------------------------


def test_save_refuses_nan_state_and_names_the_step_and_the_newest_finite_checkpoint(tmp_path):
    run, model, _optimizer = _saved_run(tmp_path, steps=(1, 2))
    model.layers[1].moving_variance.assign(np.array([1, np.inf, 1, 1], np.float32))
    with pytest.raises(NonFiniteStateError) as info:
        run.save(3)
    message = str(info.value)
    assert "at step 3" in message
    assert "moving_variance (1 of 4 values)" in message
    assert os.path.join(run.directory, "ckpt-2") in message
    assert "restart resumes from it" in message
    assert info.value.exit_code == 1
    assert [os.path.basename(p) for p in run.prefixes] == ["ckpt-2", "ckpt-1"]
    assert tf.train.latest_checkpoint(run.directory).endswith("ckpt-2")


def test_save_refuses_nan_in_an_optimizer_slot(tmp_path):
    run, _model, optimizer = _saved_run(tmp_path, steps=(1,))
    slot = optimizer.variables[2]
    slot.assign(np.full(slot.shape, np.nan, np.float32))
    with pytest.raises(NonFiniteStateError, match=r"at step 5 1 of \d+ variables hold NaN/inf"):
        run.save(5)


def test_save_refusal_with_no_checkpoint_yet_says_a_restart_starts_afresh(tmp_path):
    model, optimizer = _tiny()
    run = checkpoints.RunCheckpoint(str(tmp_path), model=model, optimizer=optimizer)
    model.layers[0].kernel.assign(np.full((3, 4), np.nan, np.float32))
    with pytest.raises(NonFiniteStateError, match="no finite checkpoint .* starts afresh"):
        run.save(1)
    assert not os.path.exists(run.directory) or run.prefixes == []


def _write_unchecked(run, step):
    """A checkpoint as an earlier version of the package wrote it: without the finiteness check."""
    return run.manager.save(checkpoint_number=step)


def test_newest_finite_skips_checkpoints_that_hold_nan(tmp_path):
    run, model, _ = _saved_run(tmp_path, steps=(1, 2))
    model.layers[0].kernel.assign(np.full((3, 4), np.nan, np.float32))
    _write_unchecked(run, 3)
    assert run.newest_finite() == os.path.join(run.directory, "ckpt-2")


def test_restore_skips_a_non_finite_checkpoint_of_an_earlier_version(tmp_path):
    run, model, _ = _saved_run(tmp_path, steps=(1, 2))
    model.layers[0].kernel.assign(np.full((3, 4), np.nan, np.float32))
    _write_unchecked(run, 3)
    fresh_model, fresh_optimizer = _tiny(seed=1)
    resumed = checkpoints.RunCheckpoint(str(tmp_path), model=fresh_model, optimizer=fresh_optimizer)
    assert resumed.restore_latest() == os.path.join(run.directory, "ckpt-2")
    assert int(fresh_optimizer.iterations.numpy()) == 2
    for v in fresh_model.variables:
        np.testing.assert_array_equal(v.numpy(), np.full(v.shape, 2.0, np.float32))


def test_nan_guard_names_the_newest_finite_checkpoint(tmp_path):
    run, model, _ = _saved_run(tmp_path, steps=(4,))
    guard = NaNGuard(run)
    guard.set_model(model)
    model.compile(optimizer=run.checkpoint.optimizer)
    run.checkpoint.optimizer.iterations.assign(5)
    guard.on_train_batch_end(0, {"loss": float("nan")})
    assert model.stop_training
    with pytest.raises(RunError) as info:
        guard.raise_if_tripped()
    assert "at step 5" in str(info.value)
    assert os.path.join(run.directory, "ckpt-4") in str(info.value)


def test_nan_guard_is_silent_for_finite_losses():
    guard = NaNGuard()
    guard.on_train_batch_end(0, {"loss": 0.25})
    guard.raise_if_tripped()
    assert guard.bad_step is None


# --- dead encoder -----------------------------------------------------------------------------------------------


def test_check_embeddings_alive_accepts_spread_embeddings():
    rng = np.random.default_rng(0)
    spread = check_embeddings_alive(rng.normal(size=(64, 16)))
    # l2-normalised gaussian rows: per-dimension std ~ 1/sqrt(16), scaled by sqrt(16)
    assert 0.8 < spread < 1.1


def test_check_embeddings_alive_refuses_identical_rows():
    row = np.linspace(-1, 1, 16, dtype=np.float32)
    with pytest.raises(DeadEncoderError, match="same embedding for every evaluation image"):
        check_embeddings_alive(np.tile(row, (32, 1)) * np.linspace(1, 3, 32)[:, None])  # same direction


def test_check_embeddings_alive_refuses_zero_and_non_finite_embeddings():
    with pytest.raises(DeadEncoderError, match="same embedding"):
        check_embeddings_alive(np.zeros((8, 4)))
    bad = np.ones((8, 4))
    bad[3, 1] = np.nan
    bad[5, 0] = np.inf
    with pytest.raises(DeadEncoderError, match="NaN/inf embeddings for 2 of 8 evaluation images"):
        check_embeddings_alive(bad, what="encoder")


def test_check_embeddings_alive_wants_a_batch():
    with pytest.raises(ValueError, match="N >= 2"):
        check_embeddings_alive(np.ones((1, 4)))
