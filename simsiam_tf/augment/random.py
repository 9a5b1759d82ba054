"""Stateless random draws keyed by an explicit seed tensor of shape `[2]`.

The same seed repeats a draw exactly, so an input pipeline whose seeds derive from the
global step is reproducible across restarts.
"""

import tensorflow as tf


def seed_tensor(seed):
    """A stateless seed of shape [2]; a Python int `s` becomes [s, 0]."""
    if isinstance(seed, int):
        seed = (seed, 0)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    seed.shape.assert_is_compatible_with([2])
    return seed


def split(seed, num):
    """`num` independent seeds derived from `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed_tensor(seed), num=num))


def uniform(shape, seed, minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval, dtype=tf.float32)


def bernoulli(batch, seed, prob):
    """bool `[batch]`: True with probability `prob`, independently per image."""
    return uniform([batch], seed) < prob
