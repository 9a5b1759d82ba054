"""The run's checkpoints: saving only finite state, restoring with fallback over damaged files, weights-only loads."""

import os
import re

import tensorflow as tf
from absl import logging

from simsiam_tf.errors import CheckpointWriteError, NonFiniteStateError, RunError
from simsiam_tf.training import finite, preemption

CHECKPOINT_SUBDIR = "checkpoints"


def _first_line(err):

    text = str(err).strip().splitlines()
    return text[0][:400] if text else type(err).__name__


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
        self.saved_step = None

    def saved(self, step):
        """Whether checkpoint number `step` is known whole: this process wrote it or restored from it.

        Not read from the directory's list: a checkpoint of that number found there may be
        the damaged one the run resumed past, and must be written again.
        """
        return self.saved_step == int(step)

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
        restored = restore_with_fallback(
            self.checkpoint,
            self.prefixes,
            where=self.directory,
            mismatch_message=lambda prefix, reason: (
                f"cannot resume from {prefix!r}: {reason}. The run directory holds checkpoints of "
                "another model (other --backbone/--width_multiplier/--dim/--pred_dim, or an older version of "
                "the package): use the flags of that run (its flags.cfg) or a new --model_dir"
            ),
        )
        if restored is not None:
            self.saved_step = int(restored.rsplit("-", 1)[1])
        return restored

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
        """Saves the state as checkpoint number `step`, after checking it is finite (else NonFiniteStateError).

        SIGTERM and SIGINT arriving meanwhile take effect once the checkpoint is complete.
        A failed write (a full disk, a file size limit) raises CheckpointWriteError: TensorFlow
        reports "File too large" as OutOfRangeError, which Keras' fit would take for the end
        of the data and go on training without checkpoints.
        """
        self.check_finite(step)
        try:
            with preemption.signals_deferred():
                path = self.manager.save(checkpoint_number=int(step))
            self.saved_step = int(step)
            return path
        except (tf.errors.OpError, OSError) as err:
            raise CheckpointWriteError(
                f"cannot write checkpoint {int(step)} in {self.write_directory}: {_first_line(err)}. "
                f"Free disk space (or raise the file size limit) and run again: {self._resume_hint()}"
            ) from None


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
