"""A checkpoint that cannot be written stops the fit with a RunError, instead of passing for the end of the data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.errors import CheckpointWriteError, RunError
from simsiam_tf.training import checkpoints
from simsiam_tf.training.callbacks import StepCheckpointer


def test_a_failed_checkpoint_write_stops_the_fit_and_names_the_cause(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.optimizer.build(model.trainable_variables)
    run = checkpoints.RunCheckpoint(str(tmp_path), model=model, optimizer=model.optimizer)
    run.save(0)

    def full_disk(checkpoint_number):
        # what TensorFlow raises when a write exceeds RLIMIT_FSIZE (EFBIG)
        raise tf.errors.OutOfRangeError(None, None, f"ckpt-{checkpoint_number}_temp/part-00000: File too large")

    run.manager.save = full_disk
    x = np.ones((16, 4), np.float32)
    with pytest.raises(CheckpointWriteError) as info:
        # Keras' fit takes an OutOfRangeError for the end of the data: it would end each epoch
        # at the first save and go on, for 3 epochs, without a checkpoint
        model.fit(x, x[:, :3], batch_size=4, epochs=3, verbose=0, callbacks=[StepCheckpointer(run, 2)])
    assert isinstance(info.value, RunError) and info.value.exit_code == 1
    assert int(model.optimizer.iterations.numpy()) == 2
    message = str(info.value)
    assert f"cannot write checkpoint 2 in {tmp_path}/checkpoints: " in message and "File too large" in message
    assert f"the newest finite checkpoint is {tmp_path}/checkpoints/ckpt-0, and a restart resumes from it" in message
