"""Label-free readings of a set of embeddings: centre share, residual correlation, effective rank, spectrum.

- The centre/residual split of Zhang et al. (ICLR 2022): each l2-normalised embedding is
  o + r_i with o the mean over the set. `center_share` = ||o||^2, the share of the (unit)
  squared norm held by the centre: 1 under complete collapse, near 0 when centred.
  `residual_correlation` is the mean absolute off-diagonal entry of the channels'
  correlation matrix of the residuals r_i: near 0 when the residual is de-correlated,
  near 1 when every channel moves together (dimensional collapse).
- The effective rank of RankMe (Garrido et al., ICML 2023): with s_k the singular values
  of the [N, D] embedding matrix (as it comes, neither centred nor normalised) and
  p_k = s_k / sum(s) + eps, exp(-sum_k p_k log p_k). It lies in [1, min(N, D)]: about 1
  when every embedding lies on one line, min(N, D) for an isotropic set.
"""

import numpy as np
import tensorflow as tf

RANK_EPS = 1e-7  # RankMe's epsilon, added to each normalised singular value
_DEAD_CHANNEL = 1e-6  # a residual channel with a smaller std has no correlation (counted as 0)


def _as_matrix(embeddings):
    z = tf.cast(embeddings, tf.float32)
    z = tf.reshape(z, [tf.shape(z)[0], -1])
    return z


def singular_values(embeddings):
    """The singular values of the [N, D] embedding matrix, largest first (float32 [min(N, D)])."""
    return tf.linalg.svd(_as_matrix(embeddings), compute_uv=False)


def effective_rank(embeddings=None, values=None):
    """RankMe's effective rank of `embeddings` [N, D] (or of precomputed singular `values`)."""
    if values is None:
        values = singular_values(embeddings)
    values = tf.cast(values, tf.float32)
    p = values / tf.maximum(tf.reduce_sum(values), 1e-30) + RANK_EPS
    return tf.exp(-tf.reduce_sum(p * tf.math.log(p)))


def center_share(embeddings):
    """||o||^2 for o the mean of the l2-normalised embeddings: the centre's share of their squared norm."""
    z = tf.math.l2_normalize(_as_matrix(embeddings), axis=-1)
    center = tf.reduce_mean(z, axis=0)
    return tf.reduce_sum(tf.square(center))


def residual_correlation(embeddings):
    """Mean |off-diagonal correlation| between channels of the residuals of the l2-normalised embeddings.

    Channels whose residual is constant (std below 1e-6) correlate with nothing (0).
    """
    z = tf.math.l2_normalize(_as_matrix(embeddings), axis=-1)
    residual = z - tf.reduce_mean(z, axis=0, keepdims=True)
    std = tf.sqrt(tf.reduce_mean(tf.square(residual), axis=0))
    alive = tf.cast(std > _DEAD_CHANNEL, tf.float32)
    scaled = residual * alive / tf.maximum(std, _DEAD_CHANNEL)
    n = tf.cast(tf.shape(z)[0], tf.float32)
    corr = tf.matmul(scaled, scaled, transpose_a=True) / n
    d = tf.shape(corr)[0]
    off_diagonal = tf.reduce_sum(tf.abs(corr)) - tf.reduce_sum(tf.abs(tf.linalg.diag_part(corr)))
    pairs = tf.cast(d * (d - 1), tf.float32)
    return tf.where(pairs > 0, off_diagonal / tf.maximum(pairs, 1.0), 0.0)


def readings(embeddings):
    """Every reading of one set of embeddings, as Python floats, and its normalised spectrum.

    Returns a dict: center_norm, residual_norm (the step metrics' centre/residual norms),
    center_share, residual_correlation, effective_rank, rank_limit (min(N, D), the largest
    effective rank the set can show) and spectrum (s_k / sum(s), largest first, a list).
    """
    z = _as_matrix(embeddings)
    if z.shape[0] is not None and z.shape[0] < 2:
        raise ValueError(f"the readings need at least 2 embeddings, got {z.shape[0]}")
    normalised = tf.math.l2_normalize(z, axis=-1)
    center = tf.reduce_mean(normalised, axis=0)
    values = singular_values(z)
    total = float(tf.reduce_sum(values))
    spectrum = (values / total).numpy() if total > 0 else np.zeros(values.shape, np.float32)
    return {
        "center_norm": float(tf.norm(center)),
        "residual_norm": float(tf.reduce_mean(tf.norm(normalised - center, axis=-1))),
        "center_share": float(center_share(z)),
        "residual_correlation": float(residual_correlation(z)),
        "effective_rank": float(effective_rank(values=values)),
        "rank_limit": int(min(z.shape[0], z.shape[1])),
        "spectrum": [float(v) for v in spectrum],
    }


def spectrum_image(spectrum, height=96, floor=1e-6):
    """A uint8 [height, len(spectrum), 3] picture of a normalised spectrum: one column per singular value,
    its bar's height log-scaled from `floor` (bottom) to 1 (top). For TensorBoard's image tab."""
    values = np.clip(np.asarray(spectrum, np.float64), floor, 1.0)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"spectrum must be a non-empty 1-D list of values, got shape {values.shape}")
    bars = np.round((np.log(values) - np.log(floor)) / -np.log(floor) * height).astype(int)
    rows = np.arange(height)[:, None]
    filled = rows >= height - bars[None, :]
    image = np.full((height, values.size, 3), 255, np.uint8)
    image[filled] = (31, 119, 180)
    return image
