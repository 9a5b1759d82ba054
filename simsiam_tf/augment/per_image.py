"""SimSiam's photometric stage on one image at a time, running only the ops an image draws.

`TwoViewAugment.appearance` works on a batch: every image goes through every slot of
the colour jitter (identity factors where an op is not drawn), and the ops applied
with a probability gather and scatter the images that drew them. On one image the
draws are known before any pixel is touched, so the stage branches instead (the
`BRANCH` mode of `views.appearance`, the image a batch of one): the four jitter slots
each run the one op they drew (`tf.switch_case`, compiled with XLA), and jitter,
grayscale and blur run only when drawn (`tf.cond`), the blur with the kernel its own
sigma needs (7 taps below sigma sqrt(2), else 13). The image (224 x 224 x 3 float32,
600 kB) stays in the core's cache between ops. It runs inside a per-image `tf.data`
map, before batching.

The ops and the draws are those of the batched stage, so the same seed gives the same
view of the same crop.
"""

import tensorflow as tf

from simsiam_tf.augment import views
from simsiam_tf.augment.images import BRANCH


@tf.autograph.experimental.do_not_convert
def appearance(image, seed, aug, transposed=False):
    """The photometric stage of `aug` (a `TwoViewAugment`) on one crop `[H, W, 3]` (uint8 or float): float32 in [0, 1].

    `transposed=True` takes the crop with its axes swapped (`[W, H, 3]`, e.g.
    `crops.resize_antialiased(transpose=True)`) and returns it the right way round:
    every op here commutes with the transpose, and the blur's own last transpose
    restores the layout when it runs (one transpose fewer on blurred views).
    """
    image = tf.convert_to_tensor(image)
    return views.appearance(image[tf.newaxis], seed, aug, BRANCH, transposed)[0]
