"""`--deterministic`: TensorFlow's op determinism and the seeds, for resumes that are exact bit for bit.

The data pipelines are deterministic in (seed, step) with or without it, and the
optimiser state is in the checkpoint; what op determinism adds is that every kernel
(reductions split across threads, scatter/segment ops, tf.data's parallel map order)
gives the same bits each time, so that a resumed run repeats the uninterrupted one
exactly.
"""

import keras
import tensorflow as tf
from absl import logging


def apply(runtime):
    """Turns on op determinism and seeds Python, NumPy and TensorFlow from `runtime.seed` when `runtime.deterministic`.

    TensorFlow offers no public way back: once on, determinism stays on in this process.
    """
    if not runtime.deterministic:
        return False
    keras.utils.set_random_seed(runtime.seed)
    tf.config.experimental.enable_op_determinism()
    logging.info("op determinism on, seed %d", runtime.seed)
    return True
