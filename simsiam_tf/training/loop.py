"""The fit loop of a job: resuming at any step, inside an epoch, with the run's epochs counted."""

import keras
from absl import logging

from simsiam_tf.training import distribute
from simsiam_tf.training.callbacks import EpochHistory


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

    def fit(first_step, steps, fit_callbacks):
        dataset = make_dataset(first_step)
        distribute.fit(model, dataset, epochs, steps, initial_epoch=epoch, callbacks=fit_callbacks, verbose=verbose)

    if done_in_epoch:
        logging.info("resuming inside epoch %d at step %d", epoch + 1, start_step)
        for callback in callbacks:
            if isinstance(callback, EpochHistory):
                callback.resumed_at_step = start_step
        # epochs=epochs (not epoch + 1) so that the progress bar counts the run's epochs; the
        # last callback ends this fit after the interrupted epoch.
        stop = _StopAfterEpoch()
        fit(start_step, steps_per_epoch - done_in_epoch, [*callbacks, stop])
        epoch += 1
        if stop.stopped_by_others or not stop.ended or epoch >= epochs:
            return
        model.stop_training = False
    fit(epoch * steps_per_epoch, steps_per_epoch, callbacks)
