"""Losses: SimSiam's negative cosine with stop-gradient, and the pair/triplet losses.

All functions compute in float32 whatever the compute dtype of their inputs, so that
mixed-precision training keeps the loss exact.
"""
import tensorflow as tf


def negative_cosine(p, z, stop_gradient=True):
    """D(p, z) of the paper: minus the cosine similarity of p and z, averaged over the batch.

    With `stop_gradient` the target `z` is treated as a constant, as in the paper's
    Algorithm 1 (`D(p, z.detach())`).
    """
    p = tf.cast(p, tf.float32)
    z = tf.cast(z, tf.float32)
    if stop_gradient:
        z = tf.stop_gradient(z)
    p = tf.math.l2_normalize(p, axis=-1, epsilon=1e-12)
    z = tf.math.l2_normalize(z, axis=-1, epsilon=1e-12)
    return -tf.reduce_mean(tf.reduce_sum(p * z, axis=-1))


def simsiam_loss(p1, p2, z1, z2, stop_gradient=True):
    """Symmetric SimSiam loss: 0.5 * D(p1, sg(z2)) + 0.5 * D(p2, sg(z1)); lies in [-1, 1]."""
    return 0.5 * negative_cosine(p1, z2, stop_gradient) + 0.5 * negative_cosine(p2, z1, stop_gradient)
