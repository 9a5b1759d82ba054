import keras
import numpy as np
import tensorflow as tf

from simsiam_tf.training import finite


def _model_and_optimizer():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization(), keras.layers.Dense(2)]
    )
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def test_float_variables_cover_weights_bn_statistics_and_optimizer_slots_once():
    model, optimizer = _model_and_optimizer()
    found = finite.float_variables(tf.train.Checkpoint(model=model, optimizer=optimizer), model)
    paths = [v.path for v in found]
    assert len(paths) == len(set(paths))
    expected = {v.path for v in model.variables} | {
        v.path for v in optimizer.variables if np.issubdtype(np.dtype(v.dtype), np.floating)
    }
    assert set(paths) == expected
    assert any(p.endswith("moving_variance") for p in paths) and any(p.endswith("moving_mean") for p in paths)
    assert not any(p.endswith(("iteration", "iterations")) for p in paths)  # int64, always finite


def test_finite_check_finds_inf_in_a_bn_statistic_and_nan_in_a_slot():
    model, optimizer = _model_and_optimizer()
    check = finite.FiniteCheck(finite.float_variables(tf.train.Checkpoint(model=model, optimizer=optimizer)))
    assert check.all_finite() is True
    assert check.non_finite() == []
    bn = model.layers[1]
    bn.moving_variance.assign(np.array([1.0, np.inf, 1.0, 1.0], np.float32))
    slot = optimizer.variables[2]
    values = np.zeros(slot.shape, np.float32)
    values.flat[0] = np.nan
    values.flat[-1] = np.nan
    slot.assign(values)
    assert check.all_finite() is False
    offenders = {name: (bad, size) for name, bad, size in check.non_finite()}
    assert offenders == {bn.moving_variance.path: (1, 4), slot.path: (2, int(np.prod(slot.shape)))}


def test_finite_check_of_nothing_is_true():
    assert finite.FiniteCheck([]).all_finite() is True


def test_describe_non_finite_names_the_first_and_counts_the_rest():
    text = finite.describe_non_finite([("a", 4, 4), ("b", 1, 8), ("c", 2, 2), ("d", 1, 1)], limit=2)
    assert text == "a (all 4 values), b (1 of 8 values) and 2 more"


def test_checkpoint_non_finite_reads_the_saved_tensors(tmp_path):
    model, optimizer = _model_and_optimizer()
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    good = checkpoint.write(str(tmp_path / "good"))
    model.layers[0].kernel.assign(np.full((3, 4), np.nan, np.float32))
    bad = checkpoint.write(str(tmp_path / "bad"))
    assert finite.checkpoint_non_finite(good) == []
    ((key, count, size),) = finite.checkpoint_non_finite(bad)
    assert (count, size) == (12, 12) and key.endswith("VARIABLE_VALUE")  # the kernel, under one of its names
