"""The colour ops (torchvision's ColorJitter and RandomGrayscale), written once for every path.

Each op works on a batch `[B, H, W, 3]` float in [0, 1] with one factor per image
(`[B]`); a single image is a batch of one. The batched host path, the per-image path
and the device path differ only in how an op drawn per image reaches the images that
drew it (`images.apply_where`: GATHER, BRANCH, SELECT) and in how the jitter's random
order is run: on a batch each of the four slots is one affine map per image (whatever
op the image drew there), on one image each slot runs the one op it drew
(`tf.switch_case`), compiled with XLA.

Brightness, contrast and saturation are one blend, `f * x + (1 - f) * target` with
target zero, the grey mean or the grey image. Pixels in [0, 1] blended with f <= 1 stay
there up to float rounding past 1, so the clip to 0 runs only when a factor exceeds 1;
the hue rotation keeps pixels in [0, 1] and is not clipped.
"""

import tensorflow as tf

from simsiam_tf.augment.images import BRANCH, GATHER, SELECT, apply_where, batch_size, batched
from simsiam_tf.augment.random import bernoulli, seed_tensor, split, uniform

# ITU-R 601-2 luma weights, as PIL's "L" conversion.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
# Factors that leave an image unchanged.
IDENTITY_FACTORS = (1.0, 1.0, 1.0, 0.0)


def _mix_channels(images, matrix):
    """`images [..., 3] @ matrix [3, k]` (or `[B, 3, k]` per image of a batch) -> `[..., k]`.

    A matrix product over the pixels runs several times faster than the channel
    reduction `reduce_sum(images * w, axis=-1)`, whose innermost axis has length 3.
    """
    shape = tf.shape(images)
    k = matrix.shape[-1]
    if matrix.shape.rank == 2:
        out = tf.matmul(tf.reshape(images, [-1, 3]), matrix)
    else:
        out = tf.matmul(tf.reshape(images, [shape[0], -1, 3]), matrix)
    return tf.reshape(out, tf.concat([shape[:-1], [k]], axis=0))


def _gray_weights(dtype, copies=1):
    """`[3, copies]`: each column the luma weights."""
    return tf.tile(tf.constant(GRAY_WEIGHTS, dtype)[:, tf.newaxis], [1, copies])


def grayscale(images, channels=1):
    """Luma `[..., channels]` with ITU-R 601-2 weights (`channels` equal copies)."""
    images = tf.convert_to_tensor(images)
    return _mix_channels(images, _gray_weights(images.dtype, channels))


def _per_image(x):
    """A per-image scalar `[B]` as `[B, 1, 1, 1]`."""
    return tf.reshape(x, [-1, 1, 1, 1])


def _mean_gray(images):
    """`[B]`: the mean of each image's grayscale."""
    return tf.linalg.matvec(tf.reduce_mean(images, axis=[1, 2]), tf.constant(GRAY_WEIGHTS))


def blend(images, op, factor):
    """`f * x + (1 - f) * target`, clipped to [0, 1]: the brightness, contrast or saturation op.

    `images` `[B, H, W, 3]`, `factor` `[B]`; `op` BRIGHTNESS (target zero), CONTRAST (the
    image's grey mean) or SATURATION (its grey image), a Python int for the whole batch
    or an int tensor `[B]`, one op per image (then HUE too, which `factor` 1 makes the
    identity). A Python int op takes its cheapest form (a scale, a scale and a shift, a
    colour matrix); a tensor of ops is one colour matrix and one shift per image.
    """
    factor = tf.cast(factor, tf.float32)
    rest = 1.0 - factor
    if isinstance(op, int) and op != SATURATION:
        out = images * _per_image(factor)
        if op == CONTRAST:
            out = out + _per_image(rest * _mean_gray(images))
    else:
        gray_weight = rest if isinstance(op, int) else tf.where(op == SATURATION, rest, 0.0)
        # f * x + g * gray(x) is x @ (f * I + g * w 1^T) per image.
        matrix = factor[:, None, None] * tf.eye(3) + gray_weight[:, None, None] * _gray_weights(tf.float32, 3)
        out = _mix_channels(images, matrix)
        if not isinstance(op, int):
            out = out + _per_image(tf.where(op == CONTRAST, rest, 0.0) * _mean_gray(images))
    # x * f <= x for f <= 1 in floating point too; a blend with f <= 1 can pass 1 by an ulp.
    high = tf.reduce_any(factor > 1.0)
    if isinstance(op, int) and op == BRIGHTNESS:
        return tf.cond(high, lambda: tf.minimum(out, 1.0), lambda: out)
    return tf.cond(high, lambda: tf.clip_by_value(out, 0.0, 1.0), lambda: tf.minimum(out, 1.0))


def _per_batch(factor, images):
    return tf.broadcast_to(tf.reshape(tf.cast(factor, tf.float32), [-1]), tf.shape(images)[:1])


@batched
def adjust_brightness(images, factor):
    """torchvision adjust_brightness: `clip(f * x)`, one factor per image."""
    return blend(images, BRIGHTNESS, _per_batch(factor, images))


@batched
def adjust_contrast(images, factor):
    """torchvision adjust_contrast: blend with the mean of the image's grayscale."""
    return blend(images, CONTRAST, _per_batch(factor, images))


@batched
def adjust_saturation(images, factor):
    """torchvision adjust_saturation: blend with the grayscale image, as one 3x3 colour matrix per image."""
    return blend(images, SATURATION, _per_batch(factor, images))


def _hue_shift(image_and_delta):
    image, delta = image_and_delta
    return tf.image.adjust_hue(image, delta)


@batched
def adjust_hue(images, delta, static_shapes=False):
    """torchvision adjust_hue: rotate the HSV hue by `delta` (fractions of a turn) per image.

    `tf.image.adjust_hue` does RGB -> HSV -> shift -> RGB per pixel in one kernel, with
    torchvision's float HSV maths; it takes one shift per call, hence a loop over the
    images. About twice as fast as `rgb_to_hsv`, the shift and `hsv_to_rgb` as
    separate ops on the batch, each of which writes a whole batch. The round trip keeps
    each pixel's largest channel and scales it by factors in [0, 1], so pixels in [0, 1]
    stay there: no clip.

    `static_shapes=True`: the separate batched ops instead (no loop over the images,
    for a compiled step on an accelerator), clipped to [0, 1].
    """
    images = tf.convert_to_tensor(images, tf.float32)
    delta = _per_batch(delta, images)
    if static_shapes:
        hsv = tf.image.rgb_to_hsv(images)
        hue = tf.math.floormod(hsv[..., 0] + delta[:, None, None], 1.0)
        rgb = tf.image.hsv_to_rgb(tf.concat([hue[..., None], hsv[..., 1:]], axis=-1))
        return tf.clip_by_value(rgb, 0.0, 1.0)
    if images.shape[0] == 1:
        return tf.image.adjust_hue(images[0], delta[0])[tf.newaxis]
    shifted = tf.cond(
        tf.shape(images)[0] > 0,
        lambda: tf.map_fn(_hue_shift, (images, delta), fn_output_signature=tf.float32),
        lambda: tf.identity(images),
    )
    return tf.ensure_shape(shifted, images.shape)


@tf.autograph.experimental.do_not_convert
def color_jitter(images, factors, order, apply=GATHER):
    """ColorJitter with given per-image factors and op order.

    `factors` `[B, 4]`: brightness, contrast and saturation factors and the hue shift;
    `order` `[B, 4]`: a permutation of (0=brightness, 1=contrast, 2=saturation, 3=hue)
    per image. Factors (1, 1, 1, 0) leave an image unchanged.

    Each of the four slots is one `blend` per image (whatever op the image drew there);
    the hue rotation reaches the images whose slot picked it as `apply` says (GATHER:
    only those; SELECT: the batch, with static shapes).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    factors = tf.cast(factors, tf.float32)
    order = tf.cast(order, tf.int32)
    hue = factors[:, HUE]

    def shift(x, delta):
        return adjust_hue(x, delta, static_shapes=apply == SELECT)

    for slot in range(4):
        op = order[:, slot]
        images = blend(
            images, op, tf.where(op == HUE, 1.0, tf.gather(factors, tf.minimum(op, SATURATION), batch_dims=1))
        )
        images = apply_where(images, (op == HUE) & (hue != 0.0), shift, apply, hue)
    return images


def jitter(image, factors, order):
    """ColorJitter of one image `[H, W, 3]` float in [0, 1]: `factors` `[4]` applied in `order` `[4]`.

    The image is a batch of one, and each slot runs only the op it drew (`tf.switch_case`).
    """
    images = tf.convert_to_tensor(image, tf.float32)[tf.newaxis]
    factors = tf.cast(factors, tf.float32)[:, tf.newaxis]
    order = tf.cast(order, tf.int32)
    ops = [
        lambda x: blend(x, BRIGHTNESS, factors[BRIGHTNESS]),
        lambda x: blend(x, CONTRAST, factors[CONTRAST]),
        lambda x: blend(x, SATURATION, factors[SATURATION]),
        lambda x: adjust_hue(x, factors[HUE]),
    ]
    for slot in range(4):
        images = tf.switch_case(order[slot], [lambda op=op, x=images: op(x) for op in ops])
    return images[0]


# XLA fuses the jitter's passes over the image (blends, clips, the HSV round trip) into
# a few loops: on one core, 0.86 instead of 1.53 ms per 224 px view, the same numbers to
# float rounding (bench/RESULTS.md, tests/augment/test_per_image.py). The blur stays out:
# its depthwise convolutions compile to slower code on CPU than TensorFlow's own kernels.
compiled_jitter = tf.function(jitter, jit_compile=True)


def jitter_factors(seed, batch_size, strength):
    """Per-image ColorJitter factors `[B, 4]` (U[1-s, 1+s] x3, hue U[-h, h]) and orders `[B, 4]`."""
    factor_seed, order_seed = split(seed, 2)
    b, c, s, h = (float(v) for v in strength)
    lo = tf.constant([max(0.0, 1.0 - b), max(0.0, 1.0 - c), max(0.0, 1.0 - s), -h])
    hi = tf.constant([1.0 + b, 1.0 + c, 1.0 + s, h])
    factors = lo + (hi - lo) * uniform([batch_size, 4], factor_seed)
    order = tf.argsort(uniform([batch_size, 4], order_seed), axis=1)
    return factors, order


@batched
def random_color_jitter(images, seed, strength=(0.4, 0.4, 0.4, 0.1), prob=0.8, apply=GATHER):
    """ColorJitter applied to each image with probability `prob`, in a random order per image.

    `apply`: GATHER or SELECT (`color_jitter`); BRANCH takes a batch of one and runs the
    XLA-compiled `jitter` only when drawn.
    """
    apply_seed, factor_seed = split(seed, 2)
    batch = batch_size(images)
    factors, order = jitter_factors(factor_seed, batch, strength)
    drawn = bernoulli(batch, apply_seed, prob)
    if apply == BRANCH:
        return apply_where(
            images, drawn, lambda x, f, o: compiled_jitter(x[0], f[0], o[0])[tf.newaxis], apply, factors, order
        )
    factors = tf.where(drawn[:, None], factors, tf.constant(IDENTITY_FACTORS))
    return color_jitter(images, factors, order, apply)


@batched
def random_grayscale(images, seed, prob=0.2, apply=GATHER):
    """Grayscale (kept as 3 equal channels) with probability `prob` per image."""
    drawn = bernoulli(batch_size(images), seed_tensor(seed), prob)
    return apply_where(images, drawn, lambda x: grayscale(x, channels=3), apply)
