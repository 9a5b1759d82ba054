"""A label-free score at every checkpoint, and the weights of the best-scoring one kept beside the run's checkpoints."""

import math
import os

import keras
import tensorflow as tf
from absl import logging

from simsiam_tf.training.files import read_json, write_json_atomic

BEST_SUBDIR = "best"
SCORES_FILE = "checkpoint_scores.json"


class BestCheckpoint(keras.callbacks.Callback):
    """Scores every checkpoint the run writes; keeps the weights of the highest score.

    Args:
      run_checkpoint: the run's `checkpoints.RunCheckpoint`; a step counts as a checkpoint
        when its newest save is that step (so list this callback after the one that saves).
      score: `fn(step) -> float`, read when a checkpoint was written at `step` (e.g. the
        effective rank of the projector output, `SpectrumMonitor.measure`).
      write_dir: the run directory this process writes: `checkpoint_scores.json` records
        every (step, score), and `best/` the model's weights (weights only) at the best one.
      model: what `best/` saves and `restore_best` loads into (by default the trained model).

    Scores persist across resumes through the JSON file; ties keep the earlier checkpoint.
    """

    def __init__(self, run_checkpoint, score, write_dir, model=None, name="score"):
        super().__init__()
        self.run_checkpoint = run_checkpoint
        self.score = score
        self.name = name
        self.path = os.path.join(write_dir, SCORES_FILE)
        self.best_prefix = os.path.join(write_dir, BEST_SUBDIR, "weights")
        self._weights_of = model
        self.scores = read_json(self.path) if os.path.exists(self.path) else []

    @property
    def best(self):
        """The best record so far ({"step", name}), or None."""
        finite = [r for r in self.scores if math.isfinite(r[self.name])]
        if not finite:
            return None
        return max(finite, key=lambda r: (r[self.name], -r["step"]))

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.run_checkpoint.saved(step):
            self.record(step)

    def record(self, step):
        """Scores the model at `step` (once per step) and saves its weights when it is the best so far."""
        step = int(step)
        if any(r["step"] == step for r in self.scores):
            return
        value = float(self.score(step))
        previous = self.best
        self.scores = [r for r in self.scores if r["step"] < step] + [{"step": step, self.name: value}]
        write_json_atomic(self.path, self.scores)
        if math.isfinite(value) and (previous is None or value > previous[self.name]):
            tf.train.Checkpoint(model=self._target()).write(self.best_prefix)
            logging.info("step %d: best %s so far (%.4g); weights in %s", step, self.name, value, self.best_prefix)

    def _target(self):
        return self._weights_of if self._weights_of is not None else self.model

    def restore_best(self, model=None):
        """Loads the best checkpoint's weights into `model` (default: the one saved); returns its record."""
        best = self.best
        if best is None:
            raise ValueError(f"no checkpoint was scored: nothing in {self.path}")
        target = model if model is not None else self._target()
        tf.train.Checkpoint(model=target).read(self.best_prefix).assert_existing_objects_matched().expect_partial()
        return best
