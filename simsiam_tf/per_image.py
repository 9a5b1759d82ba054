"""SimSiam's photometric stage on one image at a time, running only the ops an image draws.

`TwoViewAugment.appearance` works on a batch: every image goes through every slot of
the colour jitter (identity factors where an op is not drawn), and the ops applied
with a probability gather and scatter the images that drew them. On one image the
draws are known before any pixel is touched, so `appearance` branches instead: the
four jitter slots each run the one op they drew (`tf.switch_case`), and jitter,
grayscale and blur run only when drawn (`tf.cond`), the blur with the kernel its own
sigma needs (7 taps below sigma sqrt(2), else 13). The image (224 x 224 x 3 float32,
600 kB) stays in the core's cache between ops. It runs inside a per-image `tf.data`
map, before batching.

The ops are the package's (`simsiam_tf.augment`), the draws the same distributions as
`TwoViewAugment.appearance` (ColorJitter with probability `jitter_prob`, its four
factors and a random order; grayscale; blur with sigma ~ U(blur_sigma)).
"""

import tensorflow as tf

from simsiam_tf import augment


def _split(seed, num):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def _draw(seed):
    return tf.random.stateless_uniform([], seed=seed)


def _hue(image, delta):
    # No clip: the HSV round trip keeps each pixel's largest channel and scales it by
    # factors in [0, 1], so pixels in [0, 1] stay there (tests/test_per_image.py).
    return tf.image.adjust_hue(image, delta)


# The blends below mix pixels in [0, 1] with a factor f >= 0. They need the clip to 1
# (the result of f <= 1 is a convex combination, but float rounding can pass 1 by an
# ulp), and the clip to 0 only for f > 1; every pass over the image counts on one core.


def _brightness(image, factor):
    # x * f <= x for f <= 1 in floating point too.
    return tf.cond(factor > 1.0, lambda: tf.minimum(image * factor, 1.0), lambda: image * factor)


def _clip_blend(blend, factor):
    return tf.cond(factor > 1.0, lambda: tf.clip_by_value(blend, 0.0, 1.0), lambda: tf.minimum(blend, 1.0))


def _contrast(image, factor):
    mean_rgb = tf.reduce_mean(tf.reshape(image, [-1, 3]), axis=0)
    mean_gray = tf.reduce_sum(mean_rgb * tf.constant(augment.GRAY_WEIGHTS))
    return _clip_blend(image * factor + (1.0 - factor) * mean_gray, factor)


def _saturation(image, factor):
    weights = tf.constant(augment.GRAY_WEIGHTS)[:, tf.newaxis] * tf.ones([1, 3])
    matrix = factor * tf.eye(3) + (1.0 - factor) * weights
    return _clip_blend(tf.reshape(tf.matmul(tf.reshape(image, [-1, 3]), matrix), tf.shape(image)), factor)


def jitter(image, factors, order):
    """ColorJitter of one image `[H, W, 3]` float in [0, 1]: `factors` `[4]` applied in `order` `[4]`.

    The same maths as `augment.color_jitter` on a batch of one (brightness, contrast
    and saturation factors non-negative, as torchvision requires).
    """
    ops = [
        lambda x: _brightness(x, factors[augment.BRIGHTNESS]),
        lambda x: _contrast(x, factors[augment.CONTRAST]),
        lambda x: _saturation(x, factors[augment.SATURATION]),
        lambda x: _hue(x, factors[augment.HUE]),
    ]
    for slot in range(4):
        image = tf.switch_case(order[slot], [lambda op=op, x=image: op(x) for op in ops])
    return image


# XLA fuses the jitter's passes over the image (blends, clips, the HSV round trip) into
# a few loops: on one core, 0.86 instead of 1.53 ms per 224 px view, the same numbers to
# float rounding (bench/RESULTS.md, tests/test_per_image.py). The blur stays out: its
# depthwise convolutions compile to slower code on CPU than TensorFlow's own kernels.
_compiled_jitter = tf.function(jitter, jit_compile=True)


@tf.autograph.experimental.do_not_convert
def appearance(image, seed, aug, transposed=False):
    """The photometric stage of `aug` (a `TwoViewAugment`) on one crop `[H, W, 3]` (uint8 or float): float32 in [0, 1].

    `transposed=True` takes the crop with its axes swapped (`[W, H, 3]`, e.g.
    `augment.resize_antialiased(transpose=True)`) and returns it the right way round:
    every op here commutes with the transpose, and the blur's own last transpose
    restores the layout when it runs (one transpose fewer on blurred views).
    """
    image = augment.to_float(image)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    jitter_seed, gray_seed, blur_seed = _split(seed, 3)
    if aug.jitter_prob > 0 and any(aug.jitter_strength):
        apply_seed, factor_seed = _split(jitter_seed, 2)
        factors, order = augment.jitter_factors(factor_seed, 1, aug.jitter_strength)
        image = tf.cond(
            _draw(apply_seed) < aug.jitter_prob, lambda: _compiled_jitter(image, factors[0], order[0]), lambda: image
        )
    if aug.grayscale_prob > 0:
        image = tf.cond(
            _draw(gray_seed) < aug.grayscale_prob,
            lambda: augment.grayscale(image, channels=3),
            lambda: image,
        )
    if aug.blur_prob > 0:
        apply_seed, sigma_seed = _split(blur_seed, 2)
        sigma = tf.random.stateless_uniform([1], sigma_seed, aug.blur_sigma[0], aug.blur_sigma[1])
        return tf.cond(
            _draw(apply_seed) < aug.blur_prob,
            lambda: augment.box_blur_image(image, sigma, aug.blur_sigma[1], transpose=transposed),
            lambda: tf.transpose(image, [1, 0, 2]) if transposed else image,
        )
    return tf.transpose(image, [1, 0, 2]) if transposed else image
