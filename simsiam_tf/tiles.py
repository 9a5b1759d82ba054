"""The old import path of `simsiam_tf.data.tiles`: the same module object."""

import sys

from simsiam_tf.data import tiles

sys.modules[__name__] = tiles
