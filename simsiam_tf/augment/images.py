"""Helpers shared by the image ops: dtype conversion, single images as batches, applying an op to the drawn images."""

import functools

import tensorflow as tf

from simsiam_tf.augment import image_range

# How an op drawn per image reaches the images that drew it (`apply_where`):
# GATHER runs it on those images only (gather, op, scatter: the host path on batches);
# SELECT runs it on the whole batch and keeps the drawn results (static shapes, for a
# compiled step on an accelerator); BRANCH takes a batch of one image and runs the op
# only when drawn (`tf.cond`: the per-image path).
GATHER, SELECT, BRANCH = "gather", "select", "branch"
APPLY_MODES = (GATHER, SELECT, BRANCH)


def to_float(images):
    """uint8 in [0, 255] or float in [0, 1] -> float32 in [0, 1].

    Float values outside [0, 1] (0-255 floats) are refused with an error naming the fix,
    never clipped: the package's one input rule, `simsiam_tf.augment.image_range`.
    """
    return image_range.to_unit_float(images)


def batch_size(images):
    """The number of images in a batch: a Python int where it is static (no op in the graph), else a scalar tensor."""
    return images.shape[0] if images.shape[0] is not None else tf.shape(images)[0]


def batched(fn):
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


def apply_where(images, mask, fn, apply=GATHER, *params):
    """`images` with `fn(images, *params)` applied to the images where `mask` (bool `[B]`), the others untouched.

    `params` are per-image tensors `[B, ...]` that `fn` takes with the images (gathered
    with them under GATHER). `apply`: one of `APPLY_MODES` (see above).
    """
    if apply == SELECT:
        mask = tf.reshape(mask, [-1] + [1] * (images.shape.rank - 1))
        return tf.where(mask, fn(images, *params), images)
    if apply == BRANCH:
        return tf.cond(tf.reshape(mask, []), lambda: fn(images, *params), lambda: images)
    if apply != GATHER:
        raise ValueError(f"apply must be one of {APPLY_MODES}, got {apply!r}")
    picked = tf.where(mask)
    return tf.cond(
        tf.size(picked) > 0,
        lambda: tf.tensor_scatter_nd_update(
            images, picked, fn(tf.gather_nd(images, picked), *(tf.gather_nd(p, picked) for p in params))
        ),
        lambda: tf.identity(images),
    )


def pad_edge(images, width):
    """`images [B, H, W, C]` with `width` copies of the edge rows and columns on every side (PIL's edge mode).

    Concatenation, which copies rows, runs about ten times faster than the MirrorPad
    kernel (`tf.pad` mode "SYMMETRIC") on uint8 images.
    """
    rows = [tf.repeat(images[:, :1], width, axis=1), images, tf.repeat(images[:, -1:], width, axis=1)]
    images = tf.concat(rows, axis=1)
    columns = [tf.repeat(images[:, :, :1], width, axis=2), images, tf.repeat(images[:, :, -1:], width, axis=2)]
    return tf.concat(columns, axis=2)
