"""What every job does with its run directory: checkpoints, metrics, logs."""
import json
import math
import os
import tempfile

import keras
import tensorflow as tf
from absl import logging

from simsiam_tf import distribute
from simsiam_tf.errors import CollapseError, RunError  # noqa: F401 (raised by the jobs as common.X)

CHECKPOINT_SUBDIR = "checkpoints"
LOG_SUBDIR = "logs"


def write_json_atomic(path, payload):
    """Writes JSON so that a reader never sees a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


class RunCheckpoint:
    """The run's checkpoints: model and optimizer state, step count included.

    TensorFlow writes a checkpoint's files before it rewrites the small `checkpoint`
    index file (atomically), so a process killed mid-write leaves the previous
    checkpoint as the latest usable one.

    `write_dir` is where this process saves (`distribute.write_dir_for`: a temporary
    directory on the non-chief workers of a multi-worker run); every process
    restores from `model_dir`.
    """

    def __init__(self, model_dir, max_to_keep=3, write_dir=None, **trackables):
        self.directory = os.path.join(model_dir, CHECKPOINT_SUBDIR)
        self.write_directory = os.path.join(write_dir or model_dir, CHECKPOINT_SUBDIR)
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_directory, max_to_keep=max_to_keep)

    @property
    def latest(self):
        """The newest checkpoint this process wrote (or found in its write directory at start)."""
        return self.manager.latest_checkpoint

    def restore_latest(self):
        """Restores the newest checkpoint of `model_dir`; returns its path, or None when the run is new."""
        path = tf.train.latest_checkpoint(self.directory)
        if path is None:
            return None
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as err:
            raise RunError(
                f"cannot resume from {path!r}: {_first_line(err)}. The run directory holds checkpoints of "
                "another model (other --backbone/--width_multiplier/--dim/--pred_dim, or an older version of "
                "the package): use the flags of that run (its flags.cfg) or a new --model_dir"
            ) from err
        return path

    def save(self, step):
        return self.manager.save(checkpoint_number=int(step))


def resolve_checkpoint(path):
    """A checkpoint prefix from a run directory, a checkpoints folder, or a prefix itself."""
    if path is None:
        raise RunError("no checkpoint given")
    for directory in (os.path.join(path, CHECKPOINT_SUBDIR), path):
        if os.path.isdir(directory):
            latest = tf.train.latest_checkpoint(directory)
            if latest:
                return latest
    if tf.io.gfile.exists(path + ".index"):
        return path
    raise RunError(
        f"no checkpoint found at {path!r}: give a run directory written by simsiam-pretrain "
        f"(it holds {CHECKPOINT_SUBDIR}/) or a checkpoint prefix such as <run>/{CHECKPOINT_SUBDIR}/ckpt-1000"
    )


def load_weights(path, what="model", **trackables):
    """Loads weights only (no optimizer state, no step) from a run directory or checkpoint.

    `trackables` name the objects as they were saved, e.g. model=simsiam, or
    model=tf.train.Checkpoint(backbone=encoder) to take only the encoder of a SimSiam run.
    A checkpoint made for another architecture gives a RunError naming the mismatch.
    """
    prefix = resolve_checkpoint(path)
    try:
        status = tf.train.Checkpoint(**trackables).read(prefix)
        status.assert_existing_objects_matched().expect_partial()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as err:
        raise RunError(
            f"the checkpoint {prefix!r} does not fit this {what}: {_first_line(err)}. "
            "It was probably written for another backbone, width or head size: use the same "
            "--backbone/--width_multiplier/--dim/--pred_dim as the run that wrote it"
        ) from err
    return prefix


def _first_line(err):
    text = str(err).strip().splitlines()
    return text[0][:400] if text else type(err).__name__


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
    """Stops training at the first non-finite loss, before a checkpoint can store it."""

    def __init__(self):
        super().__init__()
        self.bad_step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_step = int(self.model.optimizer.iterations.numpy())
            self.model.stop_training = True

    def raise_if_tripped(self):
        if self.bad_step is not None:
            raise RunError(
                f"the loss became NaN/inf at step {self.bad_step}; the last finite checkpoint is kept. "
                "Lower --base_lr, raise --batch_size, or use --precision=float32"
            )


class EpochHistory(keras.callbacks.Callback):
    """Keeps every epoch's logs in `history.json`, across interruptions and resumes."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.epochs = read_json(path) if os.path.exists(path) else []

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, "step": int(self.model.optimizer.iterations.numpy())}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        self.epochs = [e for e in self.epochs if e["epoch"] < epoch + 1] + [record]
        write_json_atomic(self.path, self.epochs)


def fit_from_step(model, make_dataset, start_step, steps_per_epoch, epochs, callbacks, verbose):
    """Runs `model.fit` from optimizer step `start_step` to `epochs * steps_per_epoch`.

    Keras' fit resumes only at epoch boundaries, and every fit call starts a fresh
    iterator; so a run restored mid-epoch first finishes the interrupted epoch with a
    short fit on a stream positioned at `start_step`, then continues with whole epochs
    on a stream positioned at the next epoch boundary. `make_dataset(step)` returns an
    infinite stream whose first batch is the one for `step`.
    """
    epoch, done_in_epoch = divmod(start_step, steps_per_epoch)
    if epoch >= epochs:
        return
    if done_in_epoch:
        logging.info("resuming inside epoch %d at step %d", epoch + 1, start_step)
        distribute.fit(
            model, make_dataset(start_step), initial_epoch=epoch, epochs=epoch + 1,
            steps_per_epoch=steps_per_epoch - done_in_epoch, callbacks=callbacks, verbose=verbose, shuffle=False,
        )
        epoch += 1
        if model.stop_training or epoch >= epochs:
            return
    distribute.fit(
        model, make_dataset(epoch * steps_per_epoch), initial_epoch=epoch, epochs=epochs,
        steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose, shuffle=False,
    )
