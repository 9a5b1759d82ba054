"""What every job does with its run directory: checkpoints, metrics, logs."""

import json
import math
import os
import re
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from simsiam_tf import distribute, finite, monitor
from simsiam_tf.errors import CollapseError, RunError  # noqa: F401 (raised by the jobs as common.X)

CHECKPOINT_SUBDIR = "checkpoints"
LOG_SUBDIR = "logs"


class NonFiniteStateError(RunError):
    """The model or optimizer state holds NaN/inf: nothing was saved."""


class DeadEncoderError(RunError):
    """The final encoder gives non-finite or identical embeddings."""


def write_text_atomic(path, text):
    """Replaces the file at `path` with `text` so that a reader (or a crash) never sees it half-written.

    The text goes to a temporary file in the same directory, is flushed to disk, and is
    renamed over `path`; the new file gets the usual permissions (0666 less the umask).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path) + "-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # the rename itself survives a power loss only once the directory is flushed
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_json_atomic(path, payload):
    """Writes JSON so that a reader never sees a half-written file."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


# Errors TensorFlow 2.21 raises when a checkpoint's files cannot be read: a truncated
# .data shard gives IndexError ("Read less bytes than requested"); a truncated .index or
# one with a bad magic number, a missing shard, or changed bytes (DataLossError:
# "Checksum does not match") give a tf.errors.OpError subclass.
CHECKPOINT_READ_ERRORS = (IndexError, tf.errors.OpError)
# Errors of a readable checkpoint that does not fit the objects restored into it.
CHECKPOINT_MISMATCH_ERRORS = (AssertionError, ValueError, tf.errors.InvalidArgumentError)

_CHECKPOINT_NUMBER = re.compile(r"-(\d+)$")


def checkpoint_prefixes(directory):
    """The checkpoint prefixes of `directory`, newest (highest number) first.

    The union of what the `checkpoint` state file lists and the `*.index` files present,
    so that a damaged state file, or a listed checkpoint whose files are gone, still
    leaves every other checkpoint to try. Paths are taken relative to `directory`, so a
    run directory that was moved or copied keeps its checkpoints.
    """
    names = set()
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (ValueError, tf.errors.OpError) as err:  # a damaged state file must not hide the checkpoints beside it
        logging.warning(
            "cannot read the checkpoint list %s: %s; using the *.index files there",
            os.path.join(directory, "checkpoint"),
            _first_line(err),
        )
        state = None
    if state is not None:
        names.update(
            os.path.basename(p) for p in list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path]
        )
    names.update(os.path.basename(p)[: -len(".index")] for p in tf.io.gfile.glob(os.path.join(directory, "*.index")))
    names.discard("")

    def number(name):
        match = _CHECKPOINT_NUMBER.search(name)
        return int(match.group(1)) if match else -1

    return [os.path.join(directory, name) for name in sorted(names, key=lambda n: (number(n), n), reverse=True)]


def damaged_file(prefix):
    """The file of checkpoint `prefix` that cannot be read (its .index, else its .data shards)."""
    index = prefix + ".index"
    if not tf.io.gfile.exists(index):
        return index + " (missing)"
    try:
        tf.train.load_checkpoint(prefix)
    except CHECKPOINT_READ_ERRORS:
        return index
    shards = sorted(tf.io.gfile.glob(prefix + ".data-*"))
    return ", ".join(shards) if shards else prefix + ".data-* (missing)"


def restore_with_fallback(checkpoint, prefixes, *, weights_only=False, where=None, mismatch_message=None):
    """Restores into `checkpoint` the newest of `prefixes` (newest first) that reads and holds finite values.

    The one restore every job goes through. A checkpoint whose files cannot be read
    (truncated, bad magic, checksum mismatch, missing shard), or that holds NaN/inf, is
    skipped with a warning naming its file and the error, and the next older one is
    restored in full: a failed attempt may have assigned some variables, and the older
    checkpoint overwrites every one of them. A readable checkpoint that does not fit the
    objects (another architecture) is not skipped: it raises RunError with
    `mismatch_message(prefix, reason)`. With `weights_only` the checkpoint may hold more
    than `checkpoint` asks for (optimizer, step, other heads).

    Returns the prefix restored, or None when `prefixes` is empty. Raises RunError naming
    `where` (default: the directory of the newest) when none of them can be restored.
    """
    prefixes = list(prefixes)
    if not prefixes:
        return None
    state_check = None
    problems = []
    for prefix in prefixes:
        status = None
        try:
            status = checkpoint.read(prefix) if weights_only else checkpoint.restore(prefix)
            status.assert_existing_objects_matched()
            if weights_only:
                status.expect_partial()
        except CHECKPOINT_MISMATCH_ERRORS as err:
            _quiet_failed_restore(status)  # the RunError names the mismatch
            reason = _first_line(err)
            if mismatch_message is None:
                raise RunError(f"the checkpoint {prefix!r} does not fit: {reason}") from err
            raise RunError(mismatch_message(prefix, reason)) from err
        except CHECKPOINT_READ_ERRORS as err:
            problem = f"{damaged_file(prefix)}: {type(err).__name__}: {_first_line(err)}"
            problems.append(problem)
            logging.warning("skipping the damaged checkpoint %s (%s)", prefix, problem)
            continue
        if state_check is None:
            state_check = finite.FiniteCheck(finite.float_variables(checkpoint))
        if not state_check.all_finite():
            problem = f"{prefix} holds NaN/inf in {finite.describe_non_finite(state_check.non_finite())}"
            problems.append(problem)
            logging.warning("skipping the non-finite checkpoint %s", problem)
            continue
        if problems:
            logging.warning("restored the older checkpoint %s instead", prefix)
        return prefix
    where = where or os.path.dirname(prefixes[0])
    raise RunError(
        f"no usable checkpoint in {where}: all {len(prefixes)} are damaged or hold NaN/inf "
        f"(newest: {problems[0]}); move that directory away to start afresh, or restore it from a copy"
    )


UNRESTORED_VALUE_WARNINGS = (
    "Detecting that an object or model or tf.train.Checkpoint is being deleted with unrestored values",
    "Value in checkpoint could not be found in the restored object",
    "An attribute in the restored object could not be found in the checkpoint",
)


def _drop_unrestored_value_warnings(record):
    return not str(record.msg).startswith(UNRESTORED_VALUE_WARNINGS)


def _quiet_failed_restore(status):
    """After a restore that does not fit (its RunError says why): TensorFlow would log each unrestored value when
    the restore's bookkeeping is garbage-collected, at some later time; those warnings are dropped from now on."""
    if status is not None:
        status.expect_partial()
    logger = tf.get_logger()
    if _drop_unrestored_value_warnings not in logger.filters:
        logger.addFilter(_drop_unrestored_value_warnings)


class RunCheckpoint:
    """The run's checkpoints: model and optimizer state, step count included.

    TensorFlow writes a checkpoint's files before it rewrites the small `checkpoint`
    index file (atomically), so a process killed mid-write leaves the previous
    checkpoint as the latest usable one. A damaged newest checkpoint is skipped on
    restore (`restore_with_fallback`), and `save` refuses to write NaN/inf.

    `write_dir` is where this process saves (`distribute.write_dir_for`: a temporary
    directory on the non-chief workers of a multi-worker run); every process
    restores from `model_dir`.
    """

    def __init__(self, model_dir, max_to_keep=3, write_dir=None, **trackables):
        self.directory = os.path.join(model_dir, CHECKPOINT_SUBDIR)
        self.write_directory = os.path.join(write_dir or model_dir, CHECKPOINT_SUBDIR)
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_directory, max_to_keep=max_to_keep)
        self._state_check = None

    @property
    def latest(self):
        """The newest checkpoint this process wrote (or found in its write directory at start)."""
        return self.manager.latest_checkpoint

    @property
    def prefixes(self):
        """The checkpoints of `model_dir`, newest first."""
        return checkpoint_prefixes(self.directory)

    def restore_latest(self):
        """Restores the newest usable checkpoint of `model_dir`; returns its path, or None when the run is new.

        Damaged or non-finite checkpoints are skipped with a warning (the step count comes
        from the one restored); RunError when none is usable or they belong to another model.
        """
        return restore_with_fallback(
            self.checkpoint,
            self.prefixes,
            where=self.directory,
            mismatch_message=lambda prefix, reason: (
                f"cannot resume from {prefix!r}: {reason}. The run directory holds checkpoints of "
                "another model (other --backbone/--width_multiplier/--dim/--pred_dim, or an older version of "
                "the package): use the flags of that run (its flags.cfg) or a new --model_dir"
            ),
        )

    def newest_finite(self):
        """The newest checkpoint of `model_dir` that reads and holds only finite values, or None.

        Reads the checkpoints back on the host: meant for error messages, not for every step.
        """
        for prefix in self.prefixes:
            try:
                if not finite.checkpoint_non_finite(prefix):
                    return prefix
            except CHECKPOINT_READ_ERRORS:
                continue
        return None

    def _resume_hint(self):
        newest = self.newest_finite()
        if newest is None:
            return f"there is no finite checkpoint in {self.directory}, so a restart starts afresh"
        return f"the newest finite checkpoint is {newest}, and a restart resumes from it"

    def check_finite(self, step):
        """Raises NonFiniteStateError when any saved variable (weights, BN statistics, optimizer) is NaN/inf.

        One fused reduction on the devices holding the variables; the variables are
        listed again when their number changes (e.g. optimizer slots created late).
        """
        variables = finite.float_variables(self.checkpoint)
        if self._state_check is None or len(self._state_check.variables) != len(variables):
            self._state_check = finite.FiniteCheck(variables)
        if self._state_check.all_finite():
            return
        offenders = self._state_check.non_finite()
        raise NonFiniteStateError(
            f"at step {int(step)} {len(offenders)} of {len(variables)} variables hold NaN/inf "
            f"({finite.describe_non_finite(offenders)}); nothing was saved: {self._resume_hint()}. "
            "Lower --base_lr, raise --batch_size, check --weight_decay, or use --precision=float32"
        )

    def save(self, step):
        """Saves the state as checkpoint number `step`, after checking it is finite (else NonFiniteStateError)."""
        self.check_finite(step)
        return self.manager.save(checkpoint_number=int(step))


def resolve_checkpoint(path, warn_damaged=True):
    """A checkpoint prefix from a run directory, a checkpoints folder, or a prefix itself.

    In a directory, the newest checkpoint whose index reads (older ones when the newest
    is damaged, with a warning unless `warn_damaged` is False: a job that checks early
    and loads later through `load_weights` hears of the damage from the load, once; its
    data is read only when the weights are loaded).
    """
    if path is None:
        raise RunError("no checkpoint given")
    for directory in (os.path.join(path, CHECKPOINT_SUBDIR), path):
        if tf.io.gfile.isdir(directory):
            prefixes = checkpoint_prefixes(directory)
            for prefix in prefixes:
                try:
                    tf.train.load_checkpoint(prefix)
                    return prefix
                except CHECKPOINT_READ_ERRORS as err:
                    if warn_damaged:
                        logging.warning(
                            "skipping the damaged checkpoint %s (%s: %s)",
                            prefix,
                            damaged_file(prefix),
                            _first_line(err),
                        )
            if prefixes:
                raise RunError(f"no readable checkpoint in {directory}: all {len(prefixes)} are damaged")
    if tf.io.gfile.exists(path + ".index"):
        return path
    raise RunError(
        f"no checkpoint found at {path!r}: give a run directory written by simsiam-pretrain "
        f"(it holds {CHECKPOINT_SUBDIR}/) or a checkpoint prefix such as <run>/{CHECKPOINT_SUBDIR}/ckpt-1000"
    )


def _weight_prefixes(path):
    """Newest first: every checkpoint of a run directory or checkpoints folder, or just the prefix given."""
    if path is None:
        raise RunError("no checkpoint given")
    for directory in (os.path.join(path, CHECKPOINT_SUBDIR), path):
        if tf.io.gfile.isdir(directory):
            prefixes = checkpoint_prefixes(directory)
            if prefixes:
                return prefixes
    if tf.io.gfile.exists(path + ".index") or tf.io.gfile.glob(path + ".data-*"):
        return [path]  # a checkpoint named explicitly is the one wanted: no fallback
    return []


def load_weights(path, what="model", **trackables):
    """Loads weights only (no optimizer state, no step) from a run directory or checkpoint; returns the prefix read.

    `trackables` name the objects as they were saved, e.g. model=simsiam, or
    model=tf.train.Checkpoint(backbone=encoder) to take only the encoder of a SimSiam run.
    Given a directory, a damaged or non-finite newest checkpoint is skipped for the next
    older one (with a warning); a prefix given explicitly is read or fails. A checkpoint
    made for another architecture gives a RunError naming the mismatch.
    """
    prefixes = _weight_prefixes(path)
    if not prefixes:
        resolve_checkpoint(path)  # raises the message for a path that holds no checkpoint
    return restore_with_fallback(
        tf.train.Checkpoint(**trackables),
        prefixes,
        weights_only=True,
        where=path,
        mismatch_message=lambda prefix, reason: (
            f"the checkpoint {prefix!r} does not fit this {what}: {reason}. "
            "It was probably written for another backbone, width or head size: use the same "
            "--backbone/--width_multiplier/--dim/--pred_dim as the run that wrote it"
        ),
    )


def check_embeddings_alive(embeddings, what="encoder", min_normalized_std=1e-3):
    """Raises DeadEncoderError when `embeddings` (one row per evaluation image) hold NaN/inf or barely vary.

    The spread is `monitor.normalized_std`: about 1.0 for embeddings spread over the unit
    sphere, 0.0 when every image maps to the same direction (e.g. after BatchNorm moving
    variances became inf). Returns the spread.
    """
    values = np.asarray(embeddings, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"embeddings must be a [N >= 2, dim] array; got shape {values.shape}")
    bad_rows = int(np.count_nonzero(~np.isfinite(values).all(axis=1)))
    if bad_rows:
        raise DeadEncoderError(
            f"the final {what} gives NaN/inf embeddings for {bad_rows} of {values.shape[0]} evaluation images: "
            "its weights or BatchNorm statistics are not finite; the run failed"
        )
    spread = float(monitor.normalized_std(values))
    if not spread >= min_normalized_std:
        raise DeadEncoderError(
            f"the final {what} gives the same embedding for every evaluation image (normalised std {spread:.2e} "
            f"< {min_normalized_std:g} over {values.shape[0]} images): it is dead, the run failed. "
            "Lower --base_lr or raise --batch_size"
        )
    return spread


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


class _StopAfterEpoch(keras.callbacks.Callback):
    """Ends a fit after its first epoch, noting whether another callback asked to stop as well."""

    def __init__(self):
        super().__init__()
        self.ended = False
        self.stopped_by_others = False

    def on_epoch_end(self, epoch, logs=None):
        self.ended = True
        self.stopped_by_others = bool(self.model.stop_training)
        self.model.stop_training = True


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
        for callback in callbacks:
            if isinstance(callback, EpochHistory):
                callback.resumed_at_step = start_step
        # epochs=epochs (not epoch + 1) so that the progress bar counts the run's epochs; the
        # last callback ends this fit after the interrupted epoch.
        stop = _StopAfterEpoch()
        distribute.fit(
            model,
            make_dataset(start_step),
            initial_epoch=epoch,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch - done_in_epoch,
            callbacks=[*callbacks, stop],
            verbose=verbose,
            shuffle=False,
        )
        epoch += 1
        if stop.stopped_by_others or not stop.ended or epoch >= epochs:
            return
        model.stop_training = False
    distribute.fit(
        model,
        make_dataset(epoch * steps_per_epoch),
        initial_epoch=epoch,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )
