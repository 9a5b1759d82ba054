"""Monitors of representation quality: collapse indicators, kNN evaluation, callbacks."""

import tensorflow as tf


def normalized_std(z):
    """Per-channel std of the l2-normalised outputs, averaged over channels, times sqrt(dim).

    The paper's collapse indicator (Sec. 4.1): for outputs spread on the unit sphere the
    per-channel std is about 1/sqrt(dim), so the scaled value reads 1.0 when healthy and
    0.0 when every sample maps to the same vector.
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    dim = tf.cast(tf.shape(z)[-1], tf.float32)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0)) * tf.sqrt(dim)


def center_residual(z):
    """Centre/residual decomposition of l2-normalised outputs (Zhang et al., ICLR 2022).

    Each normalised output is o + r_i with o the batch mean. Returns (||o||, mean_i ||r_i||):
    a collapsed representation has ||o|| -> 1 and residuals -> 0.
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    center = tf.reduce_mean(z, axis=0, keepdims=True)
    residual = z - center
    return tf.norm(center), tf.reduce_mean(tf.norm(residual, axis=-1))


