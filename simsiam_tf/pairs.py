"""The old import path of `simsiam_tf.data.pairs`: the same module object."""

import sys

from simsiam_tf.data import pairs

sys.modules[__name__] = pairs
