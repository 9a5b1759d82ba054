"""SimSiam's two-view augmentation as batched TensorFlow ops.

Every op works on a whole batch `[B, H, W, 3]` at once and still draws its random
parameters independently per image, from stateless random ops keyed by an explicit
seed tensor of shape `[2]`: the same seed repeats a view exactly, so an input pipeline
whose seeds derive from the global step is reproducible across restarts.

The recipe follows the reference implementation (torchvision transforms):
RandomResizedCrop, ColorJitter applied with probability 0.8 in a random order,
RandomGrayscale, Gaussian blur, horizontal flip. Views are float32 in [0, 1];
normalisation belongs to the model.
"""

import dataclasses
import functools
import math
from typing import Tuple

import numpy as np
import tensorflow as tf

from simsiam_tf import affine as affine_lib

# ITU-R 601-2 luma weights, as PIL's "L" conversion.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
CROP_ATTEMPTS = 10

_stateless_split = tf.random.experimental.stateless_split


def _seed_tensor(seed):
    """A stateless seed of shape [2]; a Python int `s` becomes [s, 0]."""
    if isinstance(seed, int):
        seed = (seed, 0)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    seed.shape.assert_is_compatible_with([2])
    return seed


def _split(seed, num):
    return tf.unstack(_stateless_split(_seed_tensor(seed), num=num))


def _uniform(shape, seed, minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval, dtype=tf.float32)


def _bernoulli(batch, seed, prob):
    return _uniform([batch], seed) < prob


def _batched(fn):
    """Lets a batch op take a single image `[H, W, 3]` too.

    The ops have no tensor-dependent Python control flow, so they are kept out of
    AutoGraph (converting them when they run inside tf.data or tf.function is slow).
    """

    @tf.autograph.experimental.do_not_convert
    @functools.wraps(fn)
    def wrapper(images, *args, **kwargs):
        images = tf.convert_to_tensor(images)
        if images.shape.rank == 3:
            return fn(images[tf.newaxis], *args, **kwargs)[0]
        if images.shape.rank != 4:
            raise ValueError(f"expected images of shape [B, H, W, 3] or [H, W, 3], got {images.shape}")
        return fn(images, *args, **kwargs)

    return wrapper


def to_float(images):
    """uint8 in [0, 255] or float in [0, 1] -> float32 in [0, 1]."""
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def _per_image(x):
    return tf.reshape(tf.cast(x, tf.float32), [-1, 1, 1, 1])


# --------------------------------------------------------------------------- crops


def crop_boxes(seed, batch_size, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Per-image RandomResizedCrop windows as integer (top, left, crop_h, crop_w), each `[B]`.

    torchvision's sampler: area fraction ~ U(scale), log aspect ratio ~ U(log ratio),
    w = round(sqrt(area * r)), h = round(sqrt(area / r)); the first of 10 attempts that
    fits wins, else a centre crop with the ratio clamped to `ratio`. The attempts are
    drawn for all images at once.
    """
    area_seed, ratio_seed, pos_seed = _split(seed, 3)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    shape = [batch_size, CROP_ATTEMPTS]
    target_area = h * w * _uniform(shape, area_seed, scale[0], scale[1])
    aspect = tf.exp(_uniform(shape, ratio_seed, math.log(ratio[0]), math.log(ratio[1])))
    cw = tf.round(tf.sqrt(target_area * aspect))
    ch = tf.round(tf.sqrt(target_area / aspect))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(fits, axis=1)
    cw = tf.gather(cw, first, batch_dims=1)
    ch = tf.gather(ch, first, batch_dims=1)

    in_ratio = w / h
    fallback_w = tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w)
    fallback_h = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
    cw = tf.where(found, cw, fallback_w)
    ch = tf.where(found, ch, fallback_h)

    u = _uniform([batch_size, 2], pos_seed)
    top = tf.minimum(tf.floor(u[:, 0] * (h - ch + 1.0)), h - ch)
    left = tf.minimum(tf.floor(u[:, 1] * (w - cw + 1.0)), w - cw)
    top = tf.where(found, top, tf.floor((h - ch) / 2.0))
    left = tf.where(found, left, tf.floor((w - cw) / 2.0))
    return top, left, ch, cw


def _pad_edges(images):
    """A one-pixel border repeating the edge pixels (`tf.pad` mode "SYMMETRIC" by 1).

    Concatenation, which copies rows, runs about ten times faster than the MirrorPad
    kernel on uint8 images.
    """
    images = tf.concat([images[:, :1], images, images[:, -1:]], axis=1)
    return tf.concat([images[:, :, :1], images, images[:, :, -1:]], axis=2)


def _apply_to_picked(images, picked, fn):
    """`images` with `fn` applied to the images at indices `picked` (`[k, 1]`), the others untouched.

    Ops applied with a probability run on the images that drew them only, instead of on
    the whole batch followed by a per-image select.
    """
    return tf.cond(
        tf.size(picked) > 0,
        lambda: tf.tensor_scatter_nd_update(images, picked, fn(tf.gather_nd(images, picked))),
        lambda: tf.identity(images),
    )


def crop_and_resize(images, top, left, crop_h, crop_w, size, flip=None, antialias=True):
    """Bilinear resize of per-image windows to `size` x `size`, float32 in the input's range.

    Samples sit where `tf.image.resize` of the cropped window puts them (half-pixel
    centres), not at `tf.image.crop_and_resize`'s aligned corners; the boxes are chosen
    to make it so. Near a window's border, where resizing the cut-out crop would clamp
    to the crop's edge, the real neighbouring pixels are read; at the image border the
    kernel is clamped as `tf.image.resize` does, so a full-image window is exactly
    `tf.image.resize(..., antialias=antialias)`.

    `antialias=True`: along an axis where a window is larger than `size` the bilinear
    (triangle) kernel is widened by the shrink factor, as PIL's resize, which
    torchvision's RandomResizedCrop calls on PIL images. When some window of the batch
    shrinks, the batch is resized image by image (`ScaleAndTranslate`); when none does
    (e.g. 32 px crops of 32 px images), antialiasing changes nothing and the batch takes
    the one-op path. `flip` (bool `[B]`, optional) mirrors the chosen crops left-right.
    """
    images = tf.convert_to_tensor(images)
    top, left, crop_h, crop_w = (tf.cast(t, tf.float32) for t in (top, left, crop_h, crop_w))
    if not antialias:
        return _bilinear_crops(images, top, left, crop_h, crop_w, size, flip)
    shrinks = tf.reduce_any((crop_h > size) | (crop_w > size))
    return tf.cond(
        shrinks,
        lambda: _antialiased_crops(images, top, left, crop_h, crop_w, size, flip),
        lambda: _bilinear_crops(images, top, left, crop_h, crop_w, size, flip),
    )


def _bilinear_crops(images, top, left, crop_h, crop_w, size, flip):
    """All windows in one `tf.image.crop_and_resize` (no antialiasing)."""
    shape = tf.shape(images)
    padded = _pad_edges(images)
    span_y = tf.cast(shape[1] + 1, tf.float32)
    span_x = tf.cast(shape[2] + 1, tf.float32)
    s = float(size)
    y1 = (top + 0.5 * crop_h / s + 0.5) / span_y
    y2 = (top + (s - 0.5) * crop_h / s + 0.5) / span_y
    x1 = (left + 0.5 * crop_w / s + 0.5) / span_x
    x2 = (left + (s - 0.5) * crop_w / s + 0.5) / span_x
    if flip is not None:
        # crop_and_resize samples a box with x1 > x2 right to left.
        x1, x2 = tf.where(flip, x2, x1), tf.where(flip, x1, x2)
    boxes = tf.stack([y1, x1, y2, x2], axis=1)
    return tf.image.crop_and_resize(padded, boxes, tf.range(shape[0]), [size, size], method="bilinear")


def _resize_axis0(images, size, scale, translation):
    """`ScaleAndTranslate` along axis 0 of `[n, m]` (float32 `[size, m]`), the `m` values of a row as channels.

    With hundreds of channels the kernel's innermost loop runs over contiguous
    channels; with the 3 channels of an image it is several times slower per pixel.
    """
    return tf.raw_ops.ScaleAndTranslate(
        images=images[tf.newaxis, :, tf.newaxis],
        size=[size, 1],
        scale=tf.stack([scale, 1.0]),
        translation=tf.stack([translation, 0.0]),
        kernel_type="triangle",
        antialias=True,
    )[0, :, 0]


def resize_antialiased(image, size, transpose=False):
    """`tf.image.resize(image, [size, size], "bilinear", antialias=True)` of one image `[h, w, c]`: float32, the same numbers.

    PIL's antialiased bilinear resize (torchvision's RandomResizedCrop on PIL images).
    The op behind `tf.image.resize`, `ScaleAndTranslate`, runs here once per axis,
    with the other axis folded into the channels (rows, then columns of the transposed
    result): per 224 px view of a 335 px window, 0.9 ms of CPU instead of 1.45 ms
    (bench/RESULTS.md), equal to the two-axis op bit for bit. `transpose=True` returns
    the view transposed (`[size, size, c]` with the axes swapped), skipping the last
    transpose, for ops that commute with it (`per_image.appearance(transposed=True)`).
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    h, w, c = shape[0], shape[1], shape[2]
    s = float(size)
    rows = _resize_axis0(tf.reshape(image, [h, w * c]), size, s / tf.cast(h, tf.float32), 0.0)
    columns = tf.reshape(tf.transpose(tf.reshape(rows, [size, w, c]), [1, 0, 2]), [w, size * c])
    columns = _resize_axis0(columns, size, s / tf.cast(w, tf.float32), 0.0)
    out = tf.reshape(columns, [size, size, c])
    if not transpose:
        out = tf.transpose(out, [1, 0, 2])
    return tf.ensure_shape(out, [size, size, image.shape[-1]])


def _antialiased_crops(images, top, left, crop_h, crop_w, size, flip):
    """Each window resized on its own by `ScaleAndTranslate`, the op behind `tf.image.resize(antialias=True)`.

    The op maps output pixel centre `o + 0.5` to input `(o + 0.5 - translation) / scale`;
    `scale = size / crop` and `translation = -start * scale` put the window's corners on
    the output's. It reads only the input rows and columns under the kernel.
    """
    s = float(size)
    scale = tf.stack([s / crop_h, s / crop_w], axis=1)
    translation = tf.stack([-top * s / crop_h, -left * s / crop_w], axis=1)

    def one(args):
        image, image_scale, image_translation = args
        return tf.raw_ops.ScaleAndTranslate(
            images=image[tf.newaxis],
            size=[size, size],
            scale=image_scale,
            translation=image_translation,
            kernel_type="triangle",
            antialias=True,
        )[0]

    out = tf.map_fn(
        one,
        (images, scale, translation),
        fn_output_signature=tf.TensorSpec([size, size, None], tf.float32),
    )
    if flip is not None:
        out = tf.where(flip[:, None, None, None], tf.reverse(out, axis=[2]), out)
    return out


@_batched
def random_resized_crop(images, seed, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip_prob=0.0, antialias=True):
    """RandomResizedCrop of every image, independently: float32 `[B, size, size, 3]` in [0, 1].

    With `flip_prob` > 0 each crop is also mirrored left-right with that probability
    (RandomHorizontalFlip folded into the crop). `antialias`: see `crop_and_resize`.
    """
    shape = tf.shape(images)
    box_seed, flip_seed = _split(seed, 2)
    top, left, ch, cw = crop_boxes(box_seed, shape[0], shape[1], shape[2], scale, ratio)
    flip = _bernoulli(shape[0], flip_seed, flip_prob) if flip_prob > 0 else None
    out = crop_and_resize(images, top, left, ch, cw, size, flip, antialias)
    if images.dtype == tf.uint8:
        out = out / 255.0
    return tf.clip_by_value(out, 0.0, 1.0)


@_batched
def random_flip(images, seed, prob=0.5):
    """Horizontal flip of each image with probability `prob`."""
    flip = _bernoulli(tf.shape(images)[0], _seed_tensor(seed), prob)
    return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


# --------------------------------------------------------------------------- colour


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


def _blend(images, target, factor):
    return tf.clip_by_value(factor * images + (1.0 - factor) * target, 0.0, 1.0)


@_batched
def adjust_brightness(images, factor):
    """torchvision adjust_brightness: `clip(f * x)`, one factor per image."""
    return tf.clip_by_value(_per_image(factor) * images, 0.0, 1.0)


@_batched
def adjust_contrast(images, factor):
    """torchvision adjust_contrast: blend with the mean of the image's grayscale."""
    mean = grayscale(tf.reduce_mean(images, axis=[1, 2], keepdims=True))
    return _blend(images, mean, _per_image(factor))


@_batched
def adjust_saturation(images, factor):
    """torchvision adjust_saturation: blend with the grayscale image, as one 3x3 colour matrix per image."""
    factor = tf.reshape(tf.cast(factor, images.dtype), [-1, 1, 1])
    factor = tf.broadcast_to(factor, tf.stack([tf.shape(images)[0], 1, 1]))
    matrix = factor * tf.eye(3, dtype=images.dtype) + (1.0 - factor) * _gray_weights(images.dtype, 3)
    return tf.clip_by_value(_mix_channels(images, matrix), 0.0, 1.0)


def _hue_shift(image_and_delta):
    image, delta = image_and_delta
    return tf.image.adjust_hue(image, delta)


@_batched
def adjust_hue(images, delta):
    """torchvision adjust_hue: rotate the HSV hue by `delta` (fractions of a turn) per image.

    `tf.image.adjust_hue` does RGB -> HSV -> shift -> RGB per pixel in one kernel, with
    torchvision's float HSV maths; it takes one shift per call, hence a loop over the
    images. About twice as fast as `rgb_to_hsv`, the shift and `hsv_to_rgb` as
    separate ops on the batch, each of which writes a whole batch.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    delta = tf.broadcast_to(tf.reshape(tf.cast(delta, tf.float32), [-1]), tf.shape(images)[:1])
    shifted = tf.cond(
        tf.shape(images)[0] > 0,
        lambda: tf.map_fn(_hue_shift, (images, delta), fn_output_signature=tf.float32),
        lambda: tf.identity(images),
    )
    return tf.clip_by_value(tf.ensure_shape(shifted, images.shape), 0.0, 1.0)


BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


@tf.autograph.experimental.do_not_convert
def color_jitter(images, factors, order):
    """ColorJitter with given per-image factors and op order.

    `factors` `[B, 4]`: brightness, contrast and saturation factors and the hue shift;
    `order` `[B, 4]`: a permutation of (0=brightness, 1=contrast, 2=saturation, 3=hue)
    per image. Factors (1, 1, 1, 0) leave an image unchanged.

    The three blends share one form, `f * x + (1 - f) * target` with target zero, the
    grey mean or the grey image, so each of the four slots is one affine map per image;
    the hue rotation runs only on the images whose slot picked it.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    factors = tf.cast(factors, tf.float32)
    order = tf.cast(order, tf.int32)
    shape = tf.shape(images)
    weights = tf.constant(GRAY_WEIGHTS)
    # out = f * x + g * gray(x) + o is x @ (f * I + g * w 1^T) + o per image.
    identity = tf.eye(3)[tf.newaxis]
    gray_map = (weights[:, tf.newaxis] * tf.ones([1, 3]))[tf.newaxis]
    pixels = tf.reshape(images, [shape[0], -1, 3])
    for slot in range(4):
        op = order[:, slot]
        factor = tf.where(op == HUE, 1.0, tf.gather(factors, tf.minimum(op, SATURATION), batch_dims=1))
        rest = 1.0 - factor
        gray_weight = tf.where(op == SATURATION, rest, 0.0)
        mean_gray = tf.linalg.matvec(tf.reduce_mean(pixels, axis=1), weights)
        offset = tf.where(op == CONTRAST, rest, 0.0) * mean_gray
        matrix = factor[:, None, None] * identity + gray_weight[:, None, None] * gray_map
        pixels = tf.clip_by_value(tf.matmul(pixels, matrix) + offset[:, None, None], 0.0, 1.0)
        picked = tf.where((op == HUE) & (factors[:, HUE] != 0.0))
        hue_pixels = tf.gather_nd(pixels, picked)[:, tf.newaxis]
        pixels = tf.tensor_scatter_nd_update(
            pixels, picked, adjust_hue(hue_pixels, tf.gather_nd(factors[:, HUE], picked))[:, 0]
        )
    return tf.reshape(pixels, shape)


def jitter_factors(seed, batch_size, strength):
    """Per-image ColorJitter factors `[B, 4]` (U[1-s, 1+s] x3, hue U[-h, h]) and orders `[B, 4]`."""
    factor_seed, order_seed = _split(seed, 2)
    b, c, s, h = (float(v) for v in strength)
    lo = tf.constant([max(0.0, 1.0 - b), max(0.0, 1.0 - c), max(0.0, 1.0 - s), -h])
    hi = tf.constant([1.0 + b, 1.0 + c, 1.0 + s, h])
    factors = lo + (hi - lo) * _uniform([batch_size, 4], factor_seed)
    order = tf.argsort(_uniform([batch_size, 4], order_seed), axis=1)
    return factors, order


@_batched
def random_color_jitter(images, seed, strength=(0.4, 0.4, 0.4, 0.1), prob=0.8):
    """ColorJitter applied to each image with probability `prob`, in a random order per image."""
    apply_seed, factor_seed = _split(seed, 2)
    batch = tf.shape(images)[0]
    factors, order = jitter_factors(factor_seed, batch, strength)
    apply = _bernoulli(batch, apply_seed, prob)
    factors = tf.where(apply[:, None], factors, tf.constant([1.0, 1.0, 1.0, 0.0]))
    return color_jitter(images, factors, order)


@_batched
def random_grayscale(images, seed, prob=0.2):
    """Grayscale (kept as 3 equal channels) with probability `prob` per image."""
    picked = tf.where(_bernoulli(tf.shape(images)[0], _seed_tensor(seed), prob))
    return _apply_to_picked(images, picked, lambda x: grayscale(x, channels=3))


# --------------------------------------------------------------------------- blur


def blur_radius(image_size):
    """A `gaussian_blur` half width for an image size: the kernel ~10% of the side, odd (23 at 224 px), at least 3.

    torchvision's `GaussianBlur(kernel_size)` convention; the SimSiam recipe blurs with
    PIL's method instead (`box_blur`), whose support follows sigma.
    """
    return max(1, (image_size // 10) // 2)


def _pad_reflect(images, radius):
    """`tf.pad(images, mode="REFLECT")` by `radius` on both spatial axes, by concatenation.

    Several times faster than the MirrorPad kernel, and it takes empty batches.
    """
    tf.debugging.assert_less(
        radius, tf.minimum(tf.shape(images)[1], tf.shape(images)[2]), message="blur radius must be below the image size"
    )
    r = radius
    images = tf.concat([tf.reverse(images[:, 1 : r + 1], [1]), images, tf.reverse(images[:, -r - 1 : -1], [1])], axis=1)
    return tf.concat(
        [tf.reverse(images[:, :, 1 : r + 1], [2]), images, tf.reverse(images[:, :, -r - 1 : -1], [2])], axis=2
    )


@_batched
def gaussian_blur(images, sigma, radius):
    """Separable Gaussian blur with a per-image `sigma` `[B]`, truncated at `radius`; reflect padding.

    An exact Gaussian (TF-Addons' `gaussian_filter2d`); the recipe's blur is `box_blur`.

    The batch is folded into the channels so that one depthwise convolution applies a
    different kernel to every image.
    """
    shape = tf.shape(images)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.reshape(tf.cast(sigma, tf.float32), [-1, 1])
    kernel = tf.exp(-tf.square(x) / (2.0 * tf.square(sigma)))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)
    kernel = tf.transpose(tf.repeat(kernel, c, axis=0))  # [2r+1, B*C]
    folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, h, w, b * c])
    folded = _pad_reflect(folded, radius)
    folded = tf.nn.depthwise_conv2d(folded, kernel[:, None, :, None], [1, 1, 1, 1], "VALID")
    folded = tf.nn.depthwise_conv2d(folded, kernel[None, :, :, None], [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(folded, [h, w, b, c]), [2, 0, 1, 3])


# PIL's GaussianBlur (Pillow's BoxBlur.c), which the reference's GaussianBlur transform
# calls with radius=sigma: three passes of an "extended" box blur per axis, the box of
# fractional radius r = l + a covering 2l + 1 pixels of weight 1 / (2r + 1) and two more
# of weight a / (2r + 1), with r chosen so that the three passes have variance sigma^2.
# The three passes compose into one kernel of half width 3(l + 1) (7 taps for sigma below
# sqrt(2), 13 up to sigma 2.1), applied once per axis.
BOX_BLUR_PASSES = 3


def _box_radius(sigma):
    """BoxBlur.c's `_gaussian_blur_radius(sigma, 3)`: the fractional box radius r, float32 like `sigma`."""
    sigma2 = tf.square(sigma) / BOX_BLUR_PASSES
    whole = tf.floor((tf.sqrt(12.0 * sigma2 + 1.0) - 1.0) / 2.0)
    fraction = (2.0 * whole + 1.0) * (whole * (whole + 1.0) - 3.0 * sigma2)
    return whole + fraction / (6.0 * (sigma2 - tf.square(whole + 1.0)))


def box_blur_support(max_sigma):
    """Half width of PIL's GaussianBlur kernel (the three box passes composed) for sigmas up to `max_sigma`."""
    sigma2 = float(max_sigma) ** 2 / BOX_BLUR_PASSES
    return BOX_BLUR_PASSES * (int(math.floor((math.sqrt(12.0 * sigma2 + 1.0) - 1.0) / 2.0)) + 1)


def _box_support(sigma):
    """`box_blur_support` of a float32 tensor of sigmas (its largest), an int32 scalar."""
    whole = tf.floor(_box_radius(tf.reduce_max(sigma)))
    return BOX_BLUR_PASSES * (tf.cast(whole, tf.int32) + 1)


def box_blur_kernels(sigma, half_width):
    """PIL's GaussianBlur(radius=sigma) as one 1-D kernel per sigma: `[B, 2 * half_width + 1]`, centred.

    `half_width` below `box_blur_support(max(sigma))` truncates the kernel.
    """
    sigma = tf.reshape(tf.cast(sigma, tf.float32), [-1, 1])
    radius = _box_radius(sigma)
    whole = tf.floor(radius)
    offsets = tf.abs(tf.cast(tf.range(-half_width, half_width + 1), tf.float32))[tf.newaxis]
    box = tf.where(offsets <= whole, 1.0, 0.0) + tf.where(tf.equal(offsets, whole + 1.0), radius - whole, 0.0)
    box = box / (2.0 * radius + 1.0)
    # Compose the passes: convolutions of the symmetric boxes (one channel per sigma).
    channels = tf.transpose(box)[tf.newaxis, tf.newaxis]  # [1, 1, 2h+1, B]
    filters = tf.transpose(box)[tf.newaxis, :, :, tf.newaxis]
    kernel = channels
    for _ in range(BOX_BLUR_PASSES - 1):
        kernel = tf.nn.depthwise_conv2d(kernel, filters, [1, 1, 1, 1], "SAME")
    return tf.transpose(kernel[0, 0])


def _pad_edge(images, width):
    """`images [B, H, W, C]` with `width` copies of the edge rows and columns on every side (PIL's edge mode)."""
    rows = [tf.repeat(images[:, :1], width, axis=1), images, tf.repeat(images[:, -1:], width, axis=1)]
    images = tf.concat(rows, axis=1)
    columns = [tf.repeat(images[:, :, :1], width, axis=2), images, tf.repeat(images[:, :, -1:], width, axis=2)]
    return tf.concat(columns, axis=2)


@_batched
def box_blur(images, sigma, half_width=None):
    """PIL's `ImageFilter.GaussianBlur(radius=sigma)`, the reference's blur, with a per-image `sigma` `[B]`.

    Pillow blurs with three passes of an extended box filter per axis, edge pixels
    repeated; the three passes are composed here into one kernel per axis (exact away
    from the border; within 3(l + 1) pixels of it Pillow repeats the edge of every
    pass's output, here of the input's), on float pixels (Pillow rounds every pass to
    uint8). Against Pillow 13 on 224 px images, sigma 0.1-2: mean 0.15-0.65 / 255 on a
    textured image, 0.3-1.0 on white noise (Pillow's roundings); see tests/test_augment.py.

    `half_width`: the kernel's half width, static (e.g. `box_blur_support(max sigma)`,
    as an XLA-compiled step needs); None takes the batch's own, `box_blur_support` of its
    largest sigma (7 taps for sigma < sqrt(2), 13 up to 2.1).
    """
    shape = tf.shape(images)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    sigma = tf.cast(sigma, tf.float32)
    if half_width is None:
        half_width = _box_support(sigma)
    kernel = tf.repeat(box_blur_kernels(sigma, half_width), c, axis=0)  # [B*C, 2h+1]
    kernel = tf.transpose(kernel)
    folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, h, w, b * c])
    folded = _pad_edge(folded, half_width)
    folded = tf.nn.depthwise_conv2d(folded, kernel[:, None, :, None], [1, 1, 1, 1], "VALID")
    folded = tf.nn.depthwise_conv2d(folded, kernel[None, :, :, None], [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(folded, [h, w, b, c]), [2, 0, 1, 3])


def _box_blur_basis(whole):
    """`[4, 6(l + 1) + 1]` kernels whose sum weighted by (1, a, a^2, a^3) / (2r + 1)^3 is the three composed boxes.

    One box of radius r = l + a is (u + a e) / (2r + 1), u the 2l + 1 inner taps and e
    the two outer ones; three of them compose to sum_j C(3, j) a^j u^(3-j) * e^j.
    """
    n = whole + 1
    offsets = np.arange(-n, n + 1)
    inner = (np.abs(offsets) <= whole).astype(np.float64)
    outer = (np.abs(offsets) == n).astype(np.float64)
    terms = []
    for j, binomial in enumerate((1, 3, 3, 1)):
        term = np.ones(1)
        for factor in [inner] * (3 - j) + [outer] * j:
            term = np.convolve(term, factor)
        terms.append(binomial * term)
    return np.stack(terms).astype(np.float32)


def _blur_rows(rows, kernel, half_width):
    """The 1-D `kernel` along axis 0 of `[n, m]`, edge rows repeated; the `m` values of a row as channels."""
    n = tf.shape(rows)[0]
    padded = tf.gather(rows, tf.clip_by_value(tf.range(-half_width, n + half_width), 0, n - 1))
    filters = tf.tile(kernel[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.stack([1, 1, tf.shape(rows)[1], 1]))
    return tf.nn.depthwise_conv2d(padded[tf.newaxis, :, tf.newaxis], filters, [1, 1, 1, 1], "VALID")[0, :, 0]


def box_blur_image(image, sigma, max_sigma=2.0, transpose=False):
    """`box_blur` of one image `[H, W, C]` with a scalar `sigma` <= `max_sigma`, with the kernel this sigma needs.

    The same numbers as `box_blur` (to float rounding), cheaper on one image: the
    kernel's length follows sigma (7 taps below sqrt(2), 13 up to 2.1; one branch per
    length), its taps are a cubic in the box's fraction, and each pass runs along
    axis 0 with the other axis folded into the channels (as `resize_antialiased`).
    `transpose=True` returns the blurred image transposed (the blur commutes with it),
    skipping the last transpose.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    h, w, c = shape[0], shape[1], shape[2]
    sigma = tf.reshape(tf.cast(sigma, tf.float32), [])
    radius = _box_radius(sigma)
    whole = tf.floor(radius)
    fraction = radius - whole
    powers = tf.stack([1.0, fraction, tf.square(fraction), fraction * tf.square(fraction)])
    powers = powers / tf.pow(2.0 * radius + 1.0, 3.0)

    def blur(whole_value):
        half_width = BOX_BLUR_PASSES * (whole_value + 1)
        kernel = tf.linalg.matvec(tf.constant(_box_blur_basis(whole_value)), powers, transpose_a=True)
        rows = _blur_rows(tf.reshape(image, [h, w * c]), kernel, half_width)
        columns = tf.reshape(tf.transpose(tf.reshape(rows, [h, w, c]), [1, 0, 2]), [w, h * c])
        columns = tf.reshape(_blur_rows(columns, kernel, half_width), [w, h, c])
        return columns if transpose else tf.transpose(columns, [1, 0, 2])

    branches = [
        functools.partial(blur, whole_value) for whole_value in range(box_blur_support(max_sigma) // BOX_BLUR_PASSES)
    ]
    out = tf.switch_case(tf.minimum(tf.cast(whole, tf.int32), len(branches) - 1), branches)
    shape = [image.shape[1], image.shape[0], image.shape[2]] if transpose else image.shape
    return tf.ensure_shape(out, shape)


@_batched
def random_gaussian_blur(images, seed, prob=0.5, sigma=(0.1, 2.0), radius=None):
    """The reference's blur (`box_blur`, PIL's GaussianBlur) with probability `prob`, sigma ~ U(sigma) per image.

    `radius`: the kernel's half width (default `box_blur_support(sigma[1])`).
    """
    apply_seed, sigma_seed = _split(seed, 2)
    batch = tf.shape(images)[0]
    if radius is None:
        radius = box_blur_support(sigma[1])
    sigmas = _uniform([batch], sigma_seed, sigma[0], sigma[1])
    picked = tf.where(_bernoulli(batch, apply_seed, prob))
    return _apply_to_picked(images, picked, lambda x: box_blur(x, tf.gather_nd(sigmas, picked), radius))


# --------------------------------------------------------------------------- recipes


def _check_prob(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def _check_range(name, value, upper=None):
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair (min, max), got {value}")
    lo, hi = value
    if not 0 < lo <= hi or (upper is not None and hi > upper):
        bound = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{name} must satisfy 0 < min <= max{bound}, got {value}")


@dataclasses.dataclass(frozen=True)
class TwoViewAugment:
    """Two independent SimSiam views of each image in a batch.

    `aug(images, seed)` -> `(view1, view2)`, each float32 `[B, image_size, image_size, 3]`
    in [0, 1], from uint8 or [0, 1] float images `[B, H, W, 3]`. `seed` is an int tensor
    of shape [2]; every image gets its own random draws, and the same seed repeats them.
    Defaults are the paper's ImageNet recipe; `TwoViewAugment.cifar()` turns blur off.
    """

    image_size: int
    crop_scale: Tuple[float, float] = (0.2, 1.0)
    crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    jitter_strength: Tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    flip_prob: float = 0.5
    affine_translate: float = 0.0
    affine_rotate_deg: float = 0.0
    affine_scale: Tuple[float, float] = (1.0, 1.0)
    affine_shear_deg: float = 0.0

    def __post_init__(self):
        if int(self.image_size) != self.image_size or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size}")
        _check_range("crop_scale", self.crop_scale, upper=1.0)
        _check_range("crop_ratio", self.crop_ratio)
        _check_range("blur_sigma", self.blur_sigma)
        if len(self.jitter_strength) != 4 or any(s < 0 for s in self.jitter_strength):
            raise ValueError(
                "jitter_strength must be 4 non-negative numbers (brightness, contrast, saturation, hue), "
                f"got {self.jitter_strength}"
            )
        if self.jitter_strength[3] > 0.5:
            raise ValueError(f"jitter_strength hue must be at most 0.5, got {self.jitter_strength[3]}")
        for name in ("jitter_prob", "grayscale_prob", "blur_prob", "flip_prob"):
            _check_prob(name, getattr(self, name))
        # Normalise sequences to tuples so equal configs compare and hash equal.
        affine_lib.check(self.affine_translate, self.affine_rotate_deg, self.affine_scale, self.affine_shear_deg)
        for name in ("crop_scale", "crop_ratio", "jitter_strength", "blur_sigma", "affine_scale"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "image_size", int(self.image_size))

    @classmethod
    def cifar(cls, image_size=32, **overrides):
        """The paper's CIFAR recipe (App. D): as ImageNet's but without blur."""
        overrides.setdefault("blur_prob", 0.0)
        return cls(image_size=image_size, **overrides)

    @property
    def blur_radius(self):
        """Half width of the blur kernel: PIL's GaussianBlur support for the largest sigma (6 for sigma up to 2.1)."""
        return box_blur_support(self.blur_sigma[1])

    @tf.autograph.experimental.do_not_convert
    def crop(self, images, seed):
        """The geometric stage: random resized crop and horizontal flip, float32 `[B, S, S, 3]`.

        The flip is folded into the crop; it commutes with the later ops (all of them
        are mirror-symmetric), so the views have the reference's distribution. With an
        affine setting, each crop is then moved, turned, zoomed and slanted
        (`simsiam_tf.affine.RandomAffine`).
        """
        affine = self.affine
        if not affine.active:
            return random_resized_crop(images, seed, self.image_size, self.crop_scale, self.crop_ratio, self.flip_prob)
        crop_seed, affine_seed = _split(seed, 2)
        crops = random_resized_crop(
            images, crop_seed, self.image_size, self.crop_scale, self.crop_ratio, self.flip_prob
        )
        return tf.clip_by_value(affine(crops, affine_seed), 0.0, 1.0)

    @property
    def affine(self):
        """The geometric stage's random affine transform (inactive by default)."""
        return affine_lib.RandomAffine(
            self.affine_translate, self.affine_rotate_deg, self.affine_scale, self.affine_shear_deg
        )

    @tf.autograph.experimental.do_not_convert
    def appearance(self, images, seed):
        """The photometric stage on float [0, 1] crops: colour jitter, grayscale, blur."""
        images = to_float(images)
        jitter_seed, gray_seed, blur_seed = _split(seed, 3)
        if self.jitter_prob > 0 and any(self.jitter_strength):
            images = random_color_jitter(images, jitter_seed, self.jitter_strength, self.jitter_prob)
        if self.grayscale_prob > 0:
            images = random_grayscale(images, gray_seed, self.grayscale_prob)
        if self.blur_prob > 0:
            images = random_gaussian_blur(images, blur_seed, self.blur_prob, self.blur_sigma, self.blur_radius)
        return images

    @tf.autograph.experimental.do_not_convert
    def view(self, images, seed):
        """One augmented view of every image."""
        crop_seed, appearance_seed = _split(seed, 2)
        return self.appearance(self.crop(images, crop_seed), appearance_seed)

    @tf.autograph.experimental.do_not_convert
    def __call__(self, images, seed):
        seed1, seed2 = _split(seed, 2)
        return self.view(images, seed1), self.view(images, seed2)


# --------------------------------------------------------------------------- evaluation


def eval_resize_size(image_size):
    """Shorter side before the centre crop: 256 for 224 (the 0.875 crop ratio)."""
    return int(round(image_size / 0.875))


@_batched
def eval_preprocess(images, image_size, center_crop=True):
    """Deterministic evaluation preprocessing, float32 `[..., image_size, image_size, 3]` in [0, 1].

    `center_crop=True`: resize the shorter side to image_size / 0.875 then take the
    central image_size square (the ImageNet protocol). `center_crop=False`: plain
    resize to image_size (the CIFAR-size protocol; identity when sizes already match).
    """
    x = to_float(images)
    shape = tf.shape(x)
    if center_crop:
        h = tf.cast(shape[1], tf.float32)
        w = tf.cast(shape[2], tf.float32)
        short = float(eval_resize_size(image_size))
        # torchvision Resize(int): the short side exact, the long side truncated.
        new_h = tf.cast(tf.where(h <= w, short, tf.floor(short * h / w)), tf.int32)
        new_w = tf.cast(tf.where(h <= w, tf.floor(short * w / h), short), tf.int32)
        x = tf.image.resize(x, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
        top = tf.cast(tf.round(tf.cast(new_h - image_size, tf.float32) / 2.0), tf.int32)
        left = tf.cast(tf.round(tf.cast(new_w - image_size, tf.float32) / 2.0), tf.int32)
        x = x[:, top : top + image_size, left : left + image_size, :]
    else:
        same = tf.logical_and(tf.equal(shape[1], image_size), tf.equal(shape[2], image_size))
        x = tf.cond(
            same,
            lambda: x,
            lambda: tf.image.resize(x, [image_size, image_size], method="bilinear", antialias=True),
        )
    x = tf.ensure_shape(x, [None, image_size, image_size, 3])
    return tf.clip_by_value(x, 0.0, 1.0)


@_batched
def probe_augment(images, seed, image_size, crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5):
    """Linear-probe training augmentation: random resized crop + horizontal flip, per image."""
    return random_resized_crop(images, seed, image_size, crop_scale, crop_ratio, flip_prob)
