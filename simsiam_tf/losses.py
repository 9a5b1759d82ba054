"""Losses: SimSiam's negative cosine with stop-gradient, and the pair/triplet losses.

All functions compute in float32 whatever the compute dtype of their inputs, so that
mixed-precision training keeps the loss exact.
"""

import numbers

import keras
import tensorflow as tf

from simsiam_tf.config import DISTANCES, MININGS, check_choice


def negative_cosine(p, z, stop_gradient=True):
    """D(p, z) of the paper: minus the cosine similarity of p and z, averaged over the batch.

    With `stop_gradient` the target `z` is treated as a constant, as in the paper's
    Algorithm 1 (`D(p, z.detach())`).

    Args:
        p: predictions, `[N, dim]`.
        z: targets, `[N, dim]`.
        stop_gradient: no gradient flows into `z`.

    Returns:
        A float32 scalar in [-1, 1].
    """
    p = tf.cast(p, tf.float32)
    z = tf.cast(z, tf.float32)
    if stop_gradient:
        z = tf.stop_gradient(z)
    p = tf.math.l2_normalize(p, axis=-1, epsilon=1e-12)
    z = tf.math.l2_normalize(z, axis=-1, epsilon=1e-12)
    return -tf.reduce_mean(tf.reduce_sum(p * z, axis=-1))


def simsiam_loss(p1, p2, z1, z2, stop_gradient=True):
    """Symmetric SimSiam loss: 0.5 * D(p1, sg(z2)) + 0.5 * D(p2, sg(z1)); lies in [-1, 1].

    Args:
        p1: predictor outputs of the first view, `[N, dim]`.
        p2: predictor outputs of the second view, `[N, dim]`.
        z1: projector outputs of the first view, `[N, dim]` (the targets of `p2`).
        z2: projector outputs of the second view, `[N, dim]` (the targets of `p1`).
        stop_gradient: treat the targets as constants (the paper); False is its
            collapse ablation.

    Returns:
        A float32 scalar: -1 when every prediction points along its target.

    Example:
        >>> import numpy as np
        >>> z = np.ones([2, 4], "float32")
        >>> float(simsiam_loss(z, z, z, z))
        -1.0
    """
    return 0.5 * negative_cosine(p1, z2, stop_gradient) + 0.5 * negative_cosine(p2, z1, stop_gradient)


def simtriplet_loss(p1, p2, p3, z1, z2, z3, stop_gradient=True):
    """SimTriplet loss (Liu et al., MICCAI 2021) for two views of one sample and a neighbour.

    Views 1 and 2 are augmentations of the same image, view 3 a spatial neighbour of it:
    D(p1, z2)/2 + D(p2, z1)/2 + D(p1, z3)/2 + D(p3, z1)/2, stop-gradient on every z.
    """
    return (
        0.5 * negative_cosine(p1, z2, stop_gradient)
        + 0.5 * negative_cosine(p2, z1, stop_gradient)
        + 0.5 * negative_cosine(p1, z3, stop_gradient)
        + 0.5 * negative_cosine(p3, z1, stop_gradient)
    )


def check_margin(margin):
    """A loss margin as a float (a tensor as float32); a ValueError unless it is a number >= 0."""
    if tf.is_tensor(margin):
        return tf.cast(margin, tf.float32)
    if not isinstance(margin, numbers.Real) or isinstance(margin, bool) or not margin >= 0:
        raise ValueError(f"margin must be a number >= 0; got {margin!r}")
    return float(margin)


def contrastive_loss(y_true, distance, margin=1.0):
    """Per-pair contrastive loss (Hadsell et al. 2006) in TF-Addons' convention.

    `y_true` is 1 for a similar pair and 0 for a dissimilar one, `distance` the euclidean
    distance of the pair's embeddings: `y * d**2 + (1 - y) * max(margin - d, 0)**2`.
    `y_true` is reshaped to `distance`'s shape, so `[B]` labels with `[B, 1]` distances
    give `[B, 1]` values rather than a broadcast `[B, B]`.
    """
    margin = check_margin(margin)
    distance = tf.cast(distance, tf.float32)
    y = tf.reshape(tf.cast(y_true, tf.float32), tf.shape(distance))
    return y * tf.square(distance) + (1.0 - y) * tf.square(tf.maximum(margin - distance, 0.0))


def pairwise_distance(embeddings, distance="l2"):
    """[B, B] matrix of distances between the rows of `embeddings` (float32, zero diagonal).

    `"l2"`: euclidean; `"squared_l2"`: its square; `"angular"`: 1 - cosine similarity of the
    l2-normalised rows. Squared distances from the Gram expansion are clipped at 0, and
    the square root is taken of exact zeros only behind a mask (as TF-Addons'
    `pairwise_distance`), so coincident embeddings give a zero distance with finite
    gradients instead of the infinite derivative of sqrt at 0.
    """
    check_choice("distance", distance, DISTANCES)
    x = tf.cast(embeddings, tf.float32)
    n = tf.shape(x)[0]
    off_diagonal = 1.0 - tf.eye(n, dtype=tf.float32)
    if distance == "angular":
        x = tf.math.l2_normalize(x, axis=1)
        dist = tf.maximum(1.0 - tf.matmul(x, x, transpose_b=True), 0.0)
        return dist * off_diagonal
    sq_norms = tf.reduce_sum(tf.square(x), axis=1)
    sq = sq_norms[:, None] + sq_norms[None, :] - 2.0 * tf.matmul(x, x, transpose_b=True)
    sq = tf.maximum(sq, 0.0)
    if distance == "squared_l2":
        return sq * off_diagonal
    zero = tf.cast(tf.less_equal(sq, 0.0), tf.float32)
    dist = tf.sqrt(sq + zero * 1e-16) * (1.0 - zero)
    return dist * off_diagonal


def _masked_max(data, mask, axis=-1):
    """Max of `data` over `axis` where `mask`; finite (the row minimum) where the mask is empty."""
    mask = tf.cast(mask, data.dtype)
    lowest = tf.reduce_min(data, axis, keepdims=True)
    return tf.reduce_max((data - lowest) * mask, axis, keepdims=True) + lowest


def _masked_min(data, mask, axis=-1):
    """Min of `data` over `axis` where `mask`; finite (the row maximum) where the mask is empty."""
    mask = tf.cast(mask, data.dtype)
    highest = tf.reduce_max(data, axis, keepdims=True)
    return tf.reduce_min((data - highest) * mask, axis, keepdims=True) + highest


def _semi_hard(dist, positive, negative, margin, tfa_compat=False):
    # For anchor a and positive p the semi-hard negative is the closest negative with
    # d(a, n) > d(a, p). Sorting each anchor's negative distances and binary-searching
    # d(a, p) finds it with O(B^2) memory, where TF-Addons builds a [B*B, B] mask.
    n = tf.shape(dist)[0]
    sentinel = tf.stop_gradient(tf.reduce_max(dist)) + 1.0
    sorted_neg = tf.sort(tf.where(negative, dist, sentinel), axis=1)
    num_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1, keepdims=True)
    first_greater = tf.searchsorted(sorted_neg, dist, side="right")
    has_outside = first_greater < num_neg
    outside = tf.gather(sorted_neg, tf.minimum(first_greater, n - 1), batch_dims=1)
    # No negative farther than the positive: fall back to the anchor's farthest negative
    # (with no negative at all, the row minimum: 0, the diagonal, as TF-Addons).
    inside = _masked_max(dist, negative)
    semi_hard_negative = tf.where(has_outside, outside, inside)
    valid = positive if tfa_compat else positive & (num_neg > 0)
    per_pair = tf.maximum(dist - semi_hard_negative + margin, 0.0)
    total = tf.reduce_sum(tf.where(valid, per_pair, 0.0))
    count = tf.reduce_sum(tf.cast(valid, tf.float32))
    return total / count if tfa_compat else tf.math.divide_no_nan(total, count)


def _batch_hard(dist, positive, negative, margin, tfa_compat=False):
    # An empty mask gives the row minimum (positives: 0, the diagonal) or maximum
    # (negatives), which is what TF-Addons counts for such anchors.
    hardest_positive = _masked_max(dist, positive)[:, 0]
    hardest_negative = _masked_min(dist, negative)[:, 0]
    per_anchor = tf.maximum(hardest_positive - hardest_negative + margin, 0.0)
    if tfa_compat:
        return tf.reduce_mean(per_anchor)
    valid = tf.reduce_any(positive, axis=1) & tf.reduce_any(negative, axis=1)
    total = tf.reduce_sum(tf.where(valid, per_anchor, 0.0))
    return tf.math.divide_no_nan(total, tf.reduce_sum(tf.cast(valid, tf.float32)))


def triplet_loss(labels, embeddings, margin=1.0, mining="semi_hard", distance="l2", tfa_compat=False):
    """Triplet loss with in-batch mining; returns a float32 scalar.

    `mining="semi_hard"` is TF-Addons' `TripletSemiHardLoss` (FaceNet, Schroff et al. 2015):
    every anchor-positive pair (a, p), a != p, takes the closest negative farther from the
    anchor than p, or the anchor's farthest negative when there is none; the loss
    `max(d(a,p) - d(a,n) + margin, 0)` is averaged over the pairs. With the default
    `distance="l2"` the numbers are TF-Addons' defaults.

    `mining="batch_hard"` (Hermans et al. 2017): per anchor the farthest positive and the
    closest negative, `max(d_ap - d_an + margin, 0)` averaged over the anchors.

    Anchors without a positive or without a negative form no triplet and are left out of
    both the sum and the count; a batch with no triplet gives 0.

    `tfa_compat=True` gives TF-Addons' numbers in those cases too (its `soft` variant
    and custom distance callables are not offered):
    - `TripletSemiHardLoss`: a pair whose anchor has no negative counts with
      `max(d(a,p) + margin, 0)`; a batch without a positive pair gives NaN (0 / 0).
    - `TripletHardLoss`: the mean over every anchor; an anchor without a positive
      counts with a hardest-positive distance of 0, i.e. `max(margin - d_an, 0)`, and
      one without a negative with the row's largest distance as its hardest negative.
    Elsewhere the two settings agree. TF-Addons' `distance_metric` names map to
    `distance` as "L2" -> "l2", "squared-L2" -> "squared_l2", "angular" -> "angular".
    """
    check_choice("mining", mining, MININGS)
    check_choice("distance", distance, DISTANCES)
    margin = check_margin(margin)
    dist = pairwise_distance(embeddings, distance)
    labels = tf.reshape(labels, [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    positive = same & ~tf.eye(tf.shape(labels)[0], dtype=tf.bool)
    negative = ~same
    if mining == "semi_hard":
        return _semi_hard(dist, positive, negative, margin, bool(tfa_compat))
    return _batch_hard(dist, positive, negative, margin, bool(tfa_compat))


@keras.saving.register_keras_serializable(package="simsiam_tf")
class ContrastiveLoss(keras.losses.Loss):
    """Keras wrapper of `contrastive_loss`: `y_true` 1 = similar pair, `y_pred` a distance."""

    def __init__(self, margin=1.0, reduction="sum_over_batch_size", name="contrastive_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_margin(margin)

    def call(self, y_true, y_pred):
        return contrastive_loss(y_true, y_pred, self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="simsiam_tf")
class TripletLoss(keras.losses.Loss):
    """Keras wrapper of `triplet_loss`: `y_true` class labels, `y_pred` embeddings [B, D]."""

    def __init__(
        self,
        margin=1.0,
        mining="semi_hard",
        distance="l2",
        reduction="sum_over_batch_size",
        name="triplet_loss",
        dtype=None,
        tfa_compat=False,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_margin(margin)
        self.mining = check_choice("mining", mining, MININGS)
        self.distance = check_choice("distance", distance, DISTANCES)
        self.tfa_compat = bool(tfa_compat)

    def call(self, y_true, y_pred):
        return triplet_loss(y_true, y_pred, self.margin, self.mining, self.distance, self.tfa_compat)

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "mining": self.mining,
            "distance": self.distance,
            "tfa_compat": self.tfa_compat,
        }
