"""Deterministic evaluation preprocessing and the linear probe's training augmentation."""

import tensorflow as tf

from simsiam_tf.augment.crops import random_resized_crop
from simsiam_tf.augment.images import batched, to_float


def eval_resize_size(image_size):
    """Shorter side before the centre crop: 256 for 224 (the 0.875 crop ratio)."""
    return int(round(image_size / 0.875))


@batched
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


@batched
def probe_augment(images, seed, image_size, crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5):
    """Linear-probe training augmentation: random resized crop + horizontal flip, per image."""
    return random_resized_crop(images, seed, image_size, crop_scale, crop_ratio, flip_prob)
