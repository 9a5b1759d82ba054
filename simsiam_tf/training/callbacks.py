"""Keras callbacks of a training job: step checkpoints, scalar logs, the NaN guard, the per-epoch history."""

import math
import os

import keras
import tensorflow as tf

from simsiam_tf.errors import RunError
from simsiam_tf.training.files import read_json, write_json_atomic

LOG_SUBDIR = "logs"


class StepCheckpointer(keras.callbacks.Callback):
    """Saves the run's checkpoint every N optimizer steps.

    No checkpoint is written once training is stopping, nor while `hold()` (if given)
    is true: e.g. while the collapse monitor reads a collapsed representation, so that
    the newest checkpoint stays the last one from before the collapse.
    """

    def __init__(self, run_checkpoint, every_n_steps, hold=None):
        super().__init__()
        self.run_checkpoint = run_checkpoint
        self.every_n_steps = every_n_steps
        self.hold = hold

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every_n_steps or self.model.stop_training:
            return
        if self.hold is not None and self.hold():
            return
        self.run_checkpoint.save(step)


class ScalarLogger(keras.callbacks.Callback):
    """Writes the training metrics and the learning rate to TensorBoard every N steps.

    The step on the x axis is the optimizer's step count, so a resumed run continues
    its curves instead of starting them again at zero.
    """

    def __init__(self, log_dir, every_n_steps=50):
        super().__init__()
        self.every_n_steps = every_n_steps
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every_n_steps:
            return
        with self.writer.as_default(step=step):
            for name, value in (logs or {}).items():
                tf.summary.scalar(name, float(value))
            tf.summary.scalar("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.flush()


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, before a checkpoint can store it.

    Given the run's `RunCheckpoint`, its error names the newest finite checkpoint, the
    one a restart resumes from.
    """

    def __init__(self, run_checkpoint=None):
        super().__init__()
        self.run_checkpoint = run_checkpoint
        self.bad_step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_step = int(self.model.optimizer.iterations.numpy())
            self.model.stop_training = True

    def raise_if_tripped(self):
        if self.bad_step is None:
            return
        kept = (
            "the checkpoints written so far are kept"
            if self.run_checkpoint is None
            else (self.run_checkpoint._resume_hint())
        )
        raise RunError(
            f"the loss became NaN/inf at step {self.bad_step}; nothing was saved from that step: {kept}. "
            "Lower --base_lr, raise --batch_size, or use --precision=float32"
        )


class EpochHistory(keras.callbacks.Callback):
    """Keeps every epoch's logs in `history.json`, across interruptions and resumes.

    The record of an epoch resumed in its middle says so (`resumed_at_step`): its
    figures average the steps run after the resume only.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.epochs = read_json(path) if os.path.exists(path) else []
        self.resumed_at_step = None  # set by fit_from_step for the epoch it resumes

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, "step": int(self.model.optimizer.iterations.numpy())}
        if self.resumed_at_step is not None:
            record["resumed_at_step"] = self.resumed_at_step
            record["note"] = (
                f"resumed at step {self.resumed_at_step}: the figures average steps {self.resumed_at_step + 1}-"
                f"{record['step']} of this epoch only"
            )
            self.resumed_at_step = None
        record.update({k: float(v) for k, v in (logs or {}).items()})
        self.epochs = [e for e in self.epochs if e["epoch"] < epoch + 1] + [record]
        write_json_atomic(self.path, self.epochs)
