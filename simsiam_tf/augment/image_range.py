"""The one rule for the values of images entering the package.

Images are uint8 in [0, 255] or float in [0, 1]. A float image with a value above 1
(or below 0) is refused with an error that names the fix, never clipped and never
rescaled by guess:

- Rescaling "when the maximum is above 1" would read a dark 0-255 image (every value
  at most 1, e.g. a night frame or a mask) as a bright [0, 1] one, and the same image
  would be read differently depending on the images batched with it. A refusal is
  never silently wrong, and the fix is one argument.
- Clipping turns 0-255 floats into nearly white views with no warning, the failure
  this rule exists to stop.

The serving signatures' `_float` twins already refuse the same way
(`simsiam_tf.serving.check_float_range`). `keras.utils.image_dataset_from_directory` yields
float32 in [0, 255]: divide by 255 (`x / 255.0`), or pass `scale=1 / 255` to
`simsiam_tf.data.two_view_dataset` (as `keras.layers.Rescaling(1 / 255)`).
"""

import tensorflow as tf

# A division by 255 may land a hair above 1.
TOLERANCE = 1e-4

FIX = (
    "float images must lie in [0, 1]: divide 0-255 images by 255 (x / 255.0), pass scale=1/255 to "
    "simsiam_tf.data.two_view_dataset (as keras.layers.Rescaling(1/255)), or give uint8 images"
)


def check_unit_range(images):
    """Float images unchanged when every value lies in [0, 1]; else an InvalidArgumentError naming the fix.

    Eager calls raise at once; inside `tf.data` or a `tf.function` the error comes when
    the offending batch is computed. uint8 images pass unchanged.
    """
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return images
    if not images.dtype.is_floating:
        raise TypeError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {images.dtype.name}")
    low = tf.cast(tf.reduce_min(images), tf.float32)
    high = tf.cast(tf.reduce_max(images), tf.float32)
    ok = tf.logical_and(low >= 0.0, high <= 1.0 + TOLERANCE)
    check = tf.debugging.Assert(ok, [FIX + "; got min", low, "max", high])
    with tf.control_dependencies([check]):
        return tf.identity(images)


def to_unit_float(images):
    """uint8 in [0, 255] or float in [0, 1] -> float32 in [0, 1]; other float values refused (`check_unit_range`)."""
    images = check_unit_range(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 1.0)  # only the rounding tolerance is clipped
