"""RandomResizedCrop as batched TensorFlow ops: crop windows, crop-and-resize, antialiased resize, flips.

Every op draws its random parameters independently per image, from stateless random
ops keyed by an explicit seed (`simsiam_tf.augment.random`).
"""

import math

import tensorflow as tf

from simsiam_tf.augment import image_range
from simsiam_tf.augment.images import batched, pad_edge
from simsiam_tf.augment.random import bernoulli, seed_tensor, split, uniform

CROP_ATTEMPTS = 10


def crop_boxes(seed, batch_size, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Per-image RandomResizedCrop windows as integer (top, left, crop_h, crop_w), each `[B]`.

    torchvision's sampler: area fraction ~ U(scale), log aspect ratio ~ U(log ratio),
    w = round(sqrt(area * r)), h = round(sqrt(area / r)); the first of 10 attempts that
    fits wins, else a centre crop with the ratio clamped to `ratio`. The attempts are
    drawn for all images at once.
    """
    area_seed, ratio_seed, pos_seed = split(seed, 3)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    shape = [batch_size, CROP_ATTEMPTS]
    target_area = h * w * uniform(shape, area_seed, scale[0], scale[1])
    aspect = tf.exp(uniform(shape, ratio_seed, math.log(ratio[0]), math.log(ratio[1])))
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

    u = uniform([batch_size, 2], pos_seed)
    top = tf.minimum(tf.floor(u[:, 0] * (h - ch + 1.0)), h - ch)
    left = tf.minimum(tf.floor(u[:, 1] * (w - cw + 1.0)), w - cw)
    top = tf.where(found, top, tf.floor((h - ch) / 2.0))
    left = tf.where(found, left, tf.floor((w - cw) / 2.0))
    return top, left, ch, cw


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
    padded = pad_edge(images, 1)
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


@batched
def random_resized_crop(images, seed, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip_prob=0.0, antialias=True):
    """RandomResizedCrop of every image, independently: float32 `[B, size, size, 3]` in [0, 1].

    With `flip_prob` > 0 each crop is also mirrored left-right with that probability
    (RandomHorizontalFlip folded into the crop). `antialias`: see `crop_and_resize`.
    """
    images = image_range.check_unit_range(images)
    shape = tf.shape(images)
    box_seed, flip_seed = split(seed, 2)
    top, left, ch, cw = crop_boxes(box_seed, shape[0], shape[1], shape[2], scale, ratio)
    flip = bernoulli(shape[0], flip_seed, flip_prob) if flip_prob > 0 else None
    out = crop_and_resize(images, top, left, ch, cw, size, flip, antialias)
    if images.dtype == tf.uint8:
        out = out / 255.0
    return tf.clip_by_value(out, 0.0, 1.0)


@batched
def random_flip(images, seed, prob=0.5):
    """Horizontal flip of each image with probability `prob`."""
    flip = bernoulli(tf.shape(images)[0], seed_tensor(seed), prob)
    return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
