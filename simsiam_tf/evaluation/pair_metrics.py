"""Pair-verification metrics: ROC, AUC, EER, TAR@FAR, accuracy thresholds, N-way one-shot.

Inputs are array-likes: `labels` 1 for a same pair and 0 for a different pair, `scores`
higher for pairs more likely the same (use minus a distance). Curves come back as NumPy
arrays and single figures as Python floats. Pure NumPy; matplotlib only inside `plot_roc`.
"""

import math
import os

import numpy as np


def _check_pairs(labels, scores, need_both=True):
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D; got shapes {labels.shape} and {scores.shape}")
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels and scores must have the same length; got {labels.shape[0]} and {scores.shape[0]}")
    if labels.shape[0] == 0:
        raise ValueError("labels and scores are empty")
    if labels.dtype.kind not in "biuf" or not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"labels must be 0 (different) or 1 (same); got values {np.unique(labels)[:10]}")
    labels = labels.astype(np.int64)
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise ValueError(f"scores must be real numbers; got dtype {scores.dtype}")
    scores = scores.astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite (no NaN or inf)")
    if need_both and (labels.min() == labels.max()):
        raise ValueError("labels must contain both same (1) and different (0) pairs for a ROC-based metric")
    return labels, scores


def _counts(labels, scores):
    """Cumulative (true positives, false positives, thresholds, positives, negatives).

    One entry per distinct score, in decreasing order, after a first entry for the
    threshold +inf (nothing accepted). A pair is accepted when score >= threshold.
    """
    labels, scores = _check_pairs(labels, scores)
    order = np.argsort(-scores, kind="mergesort")
    scores = scores[order]
    labels = labels[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.r_[0, np.cumsum(labels)[last_of_run]]
    fps = np.r_[0, last_of_run + 1 - tps[1:]]
    thresholds = np.r_[np.inf, scores[last_of_run]]
    return tps, fps, thresholds, int(tps[-1]), int(fps[-1])


def roc_curve(labels, scores):
    """(fpr, tpr, thresholds), as scikit-learn's `roc_curve(..., drop_intermediate=False)`.

    One point per distinct score value (tied scores move together, giving a diagonal
    segment), thresholds decreasing from +inf, where fpr = tpr = 0.
    """
    tps, fps, thresholds, pos, neg = _counts(labels, scores)
    return fps / neg, tps / pos, thresholds


def roc_auc(labels, scores):
    """Area under the ROC (trapezoids): P(score_same > score_diff) + P(equal) / 2."""
    tps, fps, _, pos, neg = _counts(labels, scores)
    area2 = np.sum(np.diff(fps) * (tps[1:] + tps[:-1]))
    return float(area2 / (2.0 * pos * neg))


def equal_error_rate(labels, scores):
    """(eer, threshold) where the false accept rate equals the false reject rate.

    FPR - (1 - TPR) goes from -1 to 1 along the ROC; the EER is taken on the segment
    where it changes sign, interpolating linearly between the two ROC points. The
    threshold is interpolated the same way between theirs, except that the first ROC
    point's +inf is not interpolated: the segment's finite threshold is returned.
    """
    tps, fps, thresholds, pos, neg = _counts(labels, scores)
    fpr = fps / neg
    fnr = 1.0 - tps / pos
    gap = fpr - fnr
    i = int(np.argmax(gap >= 0))  # gap[0] = -1 and gap[-1] = 1, so 1 <= i
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    if np.isinf(thresholds[i - 1]) or t == 1.0:
        threshold = thresholds[i]
    else:
        threshold = thresholds[i - 1] + t * (thresholds[i] - thresholds[i - 1])
    return float(eer), float(threshold)


def min_negatives(far):
    """Negative pairs needed to measure a false accept rate of `far` (> 0): one false accept must weigh <= far."""
    return int(math.ceil(1.0 / far - 1e-9))


def tar_at_far(labels, scores, far=1e-2):
    """True accept rate at a false accept rate: the largest TPR of a ROC point with FPR <= far.

    NaN when there are fewer than `min_negatives(far)` negative pairs: every ROC point
    but the first then has FPR > far, and the figure would be 0 whatever the scores.
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must lie in [0, 1]; got {far!r}")
    fpr, tpr, _ = roc_curve(labels, scores)
    if far > 0 and np.sum(np.asarray(labels) == 0) < min_negatives(far):
        return float("nan")
    return float(np.max(tpr[fpr <= far]))


def best_threshold(labels, scores):
    """(threshold, accuracy) maximising accuracy of "same when score >= threshold".

    Candidates are +inf (every pair called different) and each distinct score; among
    equally accurate candidates the largest is returned. Choose it on validation pairs
    and report `accuracy_at_threshold` on test pairs.
    """
    tps, fps, thresholds, pos, neg = _counts(labels, scores)
    correct = tps + (neg - fps)
    i = int(np.argmax(correct))
    return float(thresholds[i]), float(correct[i] / (pos + neg))


def accuracy_at_threshold(labels, scores, threshold):
    """Fraction of pairs classified correctly when score >= threshold means same."""
    labels, scores = _check_pairs(labels, scores, need_both=False)
    threshold = float(threshold)
    if np.isnan(threshold):
        raise ValueError("threshold is NaN")
    return float(np.mean((scores >= threshold) == (labels == 1)))


def n_way_accuracy(scores):
    """N-way one-shot accuracy from a [num_trials, N] score matrix, column 0 the true match.

    A trial counts 1 when column 0 holds the strict maximum. Ties are counted
    fractionally: a maximum shared by k candidates including the true one counts 1/k,
    the expected accuracy of breaking the tie at random, so a scorer that returns a
    constant scores chance (1/N) rather than 0 or 1.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 2:
        raise ValueError(
            f"scores must be [num_trials >= 1, N >= 2] with column 0 the true match; got shape {scores.shape}"
        )
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise ValueError(f"scores must be real numbers; got dtype {scores.dtype}")
    scores = scores.astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite (no NaN or inf)")
    top = scores.max(axis=1, keepdims=True)
    at_top = scores == top
    credit = at_top[:, 0] / at_top.sum(axis=1)
    return float(np.mean(credit))


def plot_roc(fpr, tpr, path, auc=None, eer=None, title="ROC curve"):
    """Write the ROC curve as a PNG at `path` and return the path.

    Draws with matplotlib's Agg canvas directly, leaving pyplot's backend and state alone
    (so it works headless and does not disturb a notebook). `auc` goes into the legend;
    `eer` marks the point FPR = EER, TPR = 1 - EER on the FPR + TPR = 1 line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fpr.ndim != 1 or fpr.shape != tpr.shape or fpr.size < 2:
        raise ValueError(f"fpr and tpr must be 1-D of the same length >= 2; got shapes {fpr.shape} and {tpr.shape}")
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)

    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    label = "ROC" if auc is None else f"ROC (AUC = {auc:.4f})"
    ax.plot(fpr, tpr, color="C0", lw=1.5, label=label)
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="chance")
    if eer is not None:
        ax.plot([0, 1], [1, 0], color="0.8", lw=0.8, ls=":")
        ax.plot([eer], [1.0 - eer], "o", color="C3", label=f"EER = {eer:.4f}")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("false accept rate (FPR)")
    ax.set_ylabel("true accept rate (TPR)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
