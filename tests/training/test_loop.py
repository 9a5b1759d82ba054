"""training.loop: a run resumed inside an epoch counts the run's epochs and says so in history.json; a restore
that does not fit raises one error without a page of TensorFlow warnings after it."""

import gc
import json
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.errors import RunError
from simsiam_tf.training import checkpoints
from simsiam_tf.training.callbacks import EpochHistory
from simsiam_tf.training.loop import fit_from_step

STEPS_PER_EPOCH, EPOCHS = 4, 3


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _make_dataset(step):
    x = np.arange(60, dtype=np.float32).reshape(20, 3) / 60
    return tf.data.Dataset.from_tensor_slices((x, x[:, :2])).repeat().batch(2)


def test_a_run_resumed_inside_an_epoch_shows_the_runs_epochs_and_notes_the_resume(tmp_path, capsys):
    model = _model()
    model.optimizer.iterations.assign(6)  # restored at step 6: the middle of epoch 2 of 3
    history = EpochHistory(str(tmp_path / "history.json"))
    fit_from_step(model, _make_dataset, 6, STEPS_PER_EPOCH, EPOCHS, [history], verbose=2)
    out = capsys.readouterr().out
    assert "Epoch 2/3" in out and "Epoch 3/3" in out and "Epoch 2/2" not in out
    records = json.loads((tmp_path / "history.json").read_text())
    assert [(r["epoch"], r["step"]) for r in records] == [(2, 8), (3, 12)]
    assert records[0]["resumed_at_step"] == 6 and "resumed at step 6" in records[0]["note"]
    assert "resumed_at_step" not in records[1] and "note" not in records[1]
    assert int(model.optimizer.iterations.numpy()) == 12


def test_a_stop_asked_during_the_resumed_epoch_still_ends_the_run():
    model = _model()
    model.optimizer.iterations.assign(5)

    class StopNow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model.stop_training = True

    fit_from_step(model, _make_dataset, 5, STEPS_PER_EPOCH, EPOCHS, [StopNow()], verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 6


def _dense_model(width):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(width)(inputs)))


@pytest.mark.parametrize("weights_only", [False, True])
def test_a_restore_that_does_not_fit_raises_without_unrestored_value_warnings(tmp_path, caplog, weights_only):
    checkpoints.RunCheckpoint(str(tmp_path), model=_dense_model(3)).save(1)
    other = _dense_model(5)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(RunError, match="incompatible tensor with shape"):
            if weights_only:
                checkpoints.load_weights(str(tmp_path), model=other)
            else:
                checkpoints.RunCheckpoint(str(tmp_path), model=other).restore_latest()
        del other
        gc.collect()
    unrestored = [r.getMessage() for r in caplog.records if "could not be found" in r.getMessage()]
    assert unrestored == []
