"""Faults injected into real checkpoints: damaged files, NaN state, concurrent runs."""

import glob
import logging
import os
import shutil

import keras
import numpy as np
import pytest

from simsiam_tf.runs import common, lock

STEPS = (1, 2, 3)


def _build(width=16, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(width), keras.layers.BatchNormalization(),
                              keras.layers.ReLU(), keras.layers.Dense(4)])
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
    run = common.RunCheckpoint(run_dir, model=model, optimizer=optimizer)
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
    return os.path.join(run_dir, common.CHECKPOINT_SUBDIR, f"ckpt-{step}")


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
        assert any(raw[middle:middle + 256]), "the region to zero must hold non-zero bytes"
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
def test_resume_falls_back_to_the_previous_checkpoint_with_a_warning_naming_the_file(
        damage, run_dir, pristine, caplog):
    damaged = DAMAGES[damage](_prefix(run_dir, 3))
    model, optimizer = _build(seed=7)  # other initial values, so a partial restore would show
    run = common.RunCheckpoint(run_dir, model=model, optimizer=optimizer)
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
    with pytest.raises(common.RunError) as info:
        common.RunCheckpoint(run_dir, model=model, optimizer=optimizer).restore_latest()
    message = str(info.value)
    assert "\n" not in message
    assert f"no usable checkpoint in {os.path.join(run_dir, common.CHECKPOINT_SUBDIR)}: all 3 are damaged" in message
    assert "ckpt-3.data-00000-of-00001: IndexError" in message


def test_a_checkpoint_of_another_architecture_is_a_mismatch_not_a_fallback(run_dir, caplog):
    model, optimizer = _build(width=32)
    with caplog.at_level(logging.WARNING), pytest.raises(common.RunError) as info:
        common.RunCheckpoint(run_dir, model=model, optimizer=optimizer).restore_latest()
    assert f"cannot resume from {_prefix(run_dir, 3)!r}" in str(info.value)
    assert "--width_multiplier" in str(info.value)
    assert "skipping" not in caplog.text


def test_training_resumed_after_a_fallback_continues_from_the_older_step_and_rewrites_the_damaged_one(
        run_dir, pristine):
    _zero_middle_of_data(_prefix(run_dir, 3))
    model, optimizer = _build(seed=3)
    run = common.RunCheckpoint(run_dir, model=model, optimizer=optimizer)
    assert run.restore_latest() == _prefix(run_dir, 2)
    x, y = _batch()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert int(optimizer.iterations.numpy()) == 3
    run.save(3)
    # the same step from the same state: the uninterrupted run's checkpoint 3, up to float rounding of a new trace
    for got, want in zip(_state(model, optimizer), pristine[1][3], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    again, again_optimizer = _build(seed=5)
    assert common.RunCheckpoint(run_dir, model=again, optimizer=again_optimizer).restore_latest() == _prefix(run_dir, 3)
    _assert_state(again, again_optimizer, _state(model, optimizer))


@pytest.mark.parametrize("damage", ["truncated_data", "truncated_index"])
def test_weights_only_load_from_a_run_directory_falls_back(damage, run_dir, pristine, caplog):
    DAMAGES[damage](_prefix(run_dir, 3))
    model, _ = _build(seed=9)
    with caplog.at_level(logging.WARNING):
        prefix = common.load_weights(run_dir, what="test model", model=model)
    assert prefix == _prefix(run_dir, 2)
    for got, want in zip([v.numpy() for v in model.variables], pristine[1][2], strict=False):
        np.testing.assert_array_equal(got, want)
    assert "skipping the damaged checkpoint" in caplog.text


def test_weights_only_load_of_a_damaged_prefix_named_explicitly_is_a_one_line_error(run_dir):
    damaged = _truncate_data(_prefix(run_dir, 3))
    model, _ = _build()
    with pytest.raises(common.RunError) as info:
        common.load_weights(_prefix(run_dir, 3), model=model)
    assert "\n" not in str(info.value) and damaged in str(info.value)


def test_resolve_checkpoint_skips_a_newest_checkpoint_whose_index_is_damaged(run_dir):
    _bad_magic_index(_prefix(run_dir, 3))
    assert common.resolve_checkpoint(run_dir) == _prefix(run_dir, 2)


def test_nan_weights_during_training_stop_the_save_and_name_the_newest_finite_checkpoint(run_dir, pristine):
    model, optimizer = _build()
    run = common.RunCheckpoint(run_dir, model=model, optimizer=optimizer)
    run.restore_latest()
    optimizer.learning_rate.assign(float("nan"))  # the loss of the step is finite, the weights after it are not
    x, y = _batch()
    with pytest.raises(common.NonFiniteStateError) as info:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[common.StepCheckpointer(run, 1)])
    message = str(info.value)
    assert "at step 4" in message and f"the newest finite checkpoint is {_prefix(run_dir, 3)}" in message
    assert [os.path.basename(p) for p in run.prefixes] == ["ckpt-3", "ckpt-2", "ckpt-1"]
    fresh, fresh_optimizer = _build(seed=1)
    assert common.RunCheckpoint(run_dir, model=fresh, optimizer=fresh_optimizer).restore_latest() == _prefix(run_dir, 3)
    _assert_state(fresh, fresh_optimizer, pristine[1][3])


def test_a_second_run_on_a_locked_directory_fails_before_touching_its_checkpoints(run_dir):
    before = sorted(os.listdir(os.path.join(run_dir, common.CHECKPOINT_SUBDIR)))
    with (
        lock.RunLock(run_dir, command="first run"),
        pytest.raises(common.RunError, match=r"in use by pid \d+ on host .* \(first run\)"),
        lock.RunLock(run_dir),
    ):
        common.RunCheckpoint(run_dir, model=_build()[0]).save(99)
    assert sorted(os.listdir(os.path.join(run_dir, common.CHECKPOINT_SUBDIR))) == before
