"""Random colour inversion (`1 - x`), drawn per image: views that must match across a flipped polarity.

An object drawn darker than its background and the same object drawn lighter are one
shape; colour jitter never flips that (its contrast factor is positive), so without
inversion the two polarities give unrelated features and a probe needs labels of both.
With `invert_prob` a view is the photographic negative of the crop: luminance and every
channel flipped, the hue turned half way round. It commutes with the grayscale
conversion (its weights sum to 1), the blur (its kernel sums to 1) and transposes.
"""

import tensorflow as tf

from simsiam_tf.augment.images import GATHER, apply_where, batch_size
from simsiam_tf.augment.random import bernoulli, seed_tensor


def invert(images):
    """`1 - images` for float images in [0, 1]."""
    return 1.0 - tf.convert_to_tensor(images)


@tf.autograph.experimental.do_not_convert
def random_invert(images, seed, prob, apply=GATHER):
    """Each image of `[B, H, W, C]` (float in [0, 1]) inverted with probability `prob`, drawn from `seed`."""
    drawn = bernoulli(batch_size(images), seed_tensor(seed), prob)
    return apply_where(images, drawn, invert, apply)
