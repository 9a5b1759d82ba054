"""Preemption by SIGTERM: the job finishes the step in flight, saves a checkpoint and stops with exit code 5.

A preemptible VM, Kubernetes and SLURM send SIGTERM first and SIGKILL after a grace
period. Inside `on_sigterm()` a SIGTERM only sets a flag: `PreemptionCheckpointer` (a
Keras callback) sees it after the step that was running, saves that step's checkpoint
and stops the fit; the job then raises `PreemptedError` (exit code 5, "preempted,
restart me"), and a restart resumes from that step, so no step is lost.

While a checkpoint is written (`signals_deferred()`, which `RunCheckpoint.save` uses),
SIGTERM and SIGINT are held back and delivered once the files are complete: a second
signal cannot leave a half-written checkpoint. (SIGKILL cannot be held back; TensorFlow
writes the `checkpoint` list last, so the previous checkpoint stays the newest.)

Signal handlers can only be set in the main thread: elsewhere both context managers
leave the handlers as they are, with a warning for `on_sigterm()`.
"""

import contextlib
import signal
import threading

import keras
from absl import logging

from simsiam_tf.errors import PreemptedError

_active = []  # the Preemption of the innermost on_sigterm(), if any


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


class Preemption:
    """What `on_sigterm()` yields: whether (and by which signal) the job was asked to stop."""

    def __init__(self):
        self.signal_name = None
        self.saved = None  # the checkpoint PreemptionCheckpointer wrote on the way out

    @property
    def requested(self):
        return self.signal_name is not None

    def _handle(self, signum, frame):
        # Only a flag: the step in flight finishes, and the callback saves after it.
        self.signal_name = signal.Signals(signum).name

    def stop_if_requested(self, step, what="the run"):
        """Raises `PreemptedError` when a SIGTERM came; `step` is where a restart resumes."""
        if not self.requested:
            return
        saved = f"its checkpoint {self.saved} is saved" if self.saved else "every finished step is in its checkpoint"
        raise PreemptedError(
            f"stopped by {self.signal_name} at step {int(step)} of {what}: {saved}; run the same command "
            f"again to resume from step {int(step)}"
        )


@contextlib.contextmanager
def on_sigterm(enabled=True):
    """Turns SIGTERM into a request to stop after the current step; restores the previous handler on exit.

    With `enabled` False (a multi-worker run, whose workers must stop at the same step)
    SIGTERM keeps its handler, and a restart resumes from the last periodic checkpoint.
    """
    preemption = Preemption()
    if not enabled or not _in_main_thread():
        if enabled:
            logging.warning("not in the main thread: SIGTERM cannot be caught, and ends the job without a checkpoint")
        _active.append(preemption)
        try:
            yield preemption
        finally:
            _active.remove(preemption)
        return
    previous = signal.signal(signal.SIGTERM, preemption._handle)
    _active.append(preemption)
    try:
        yield preemption
    finally:
        _active.remove(preemption)
        signal.signal(signal.SIGTERM, previous)


def active():
    """The `Preemption` of the innermost `on_sigterm()`, or None outside one."""
    return _active[-1] if _active else None


def stop_if_requested(step, what="the run"):
    """`Preemption.stop_if_requested` of the active `on_sigterm()`; nothing outside one."""
    preemption = active()
    if preemption is not None:
        preemption.stop_if_requested(step, what)


DEFERRED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def signals_deferred():
    """Holds SIGTERM and SIGINT back for the duration, then delivers them to the handlers restored.

    A SIGINT held back becomes the usual KeyboardInterrupt once the block has finished;
    a SIGTERM reaches the `on_sigterm()` flag, or without one ends the process as usual.
    """
    if not _in_main_thread():
        yield
        return
    held = []
    previous = {}
    try:
        for signum in DEFERRED_SIGNALS:
            previous[signum] = signal.signal(signum, lambda s, f: held.append(s))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for signum in dict.fromkeys(held):
        signal.raise_signal(signum)


class PreemptionCheckpointer(keras.callbacks.Callback):
    """After the step in which a SIGTERM came: saves the run's checkpoint at that step and stops the fit.

    Does nothing outside `on_sigterm()`. Like `StepCheckpointer`, saves nothing when
    another callback is stopping the fit at that step (the NaN guard, the collapse
    alarm) or while `hold()` is true; the job's own check then raises its error.
    """

    def __init__(self, run_checkpoint, hold=None):
        super().__init__()
        self.run_checkpoint = run_checkpoint
        self.hold = hold
        self.stopped_at_step = None

    def on_train_batch_end(self, batch, logs=None):
        preemption = active()
        if preemption is None or not preemption.requested or self.stopped_at_step is not None:
            return
        step = int(self.model.optimizer.iterations.numpy())
        self.stopped_at_step = step
        if not self.model.stop_training and not (self.hold is not None and self.hold()):
            latest = self.run_checkpoint.latest
            if not self.run_checkpoint.saved(step):
                latest = self.run_checkpoint.save(step)
            preemption.saved = latest
            logging.warning("%s: saved %s after step %d; stopping", preemption.signal_name, latest, step)
        self.model.stop_training = True
