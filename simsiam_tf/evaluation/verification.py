"""Scoring a verifier on fixed pairs and trials, and the verification figures of the scores.

Every image of the validation pairs, evaluation pairs and N-way trials is embedded
once; pair scores come from the embeddings (`PairVerifier.score_embeddings`). The
figures (ROC-AUC, EER, accuracy at the threshold chosen on validation pairs, TAR at
FAR=1e-2, N-way one-shot accuracy) are computed by `pair_metrics`.
"""

import dataclasses
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from simsiam_tf.data import pair_images, pairs
from simsiam_tf.evaluation import pair_metrics

N_WAYS = (5, 20)
FAR = 1e-2
FIGURE_KEYS = ("roc_auc", "eer", "accuracy", "threshold", "tar_at_far_1e-2", "one_shot_5way", "one_shot_20way")


@dataclasses.dataclass(frozen=True, eq=False)
class EvaluationPlan:
    """The fixed evaluation sets of a run: validation pairs, evaluation pairs, N-way trials."""

    validation: pairs.PairSet
    evaluation: pairs.PairSet
    trials: Dict[int, Optional[tuple]]
    notes: List[str]


def embed_images(verifier, table, indices, image_size, batch_size=256, crop_fraction=1.0):
    """Embeddings float32 `[len(indices), D]` of the table's images at `indices`, in that order."""
    embed = tf.function(lambda x: verifier.embed(x, training=False), reduce_retracing=True)
    images = pair_images.make_image_dataset(table, indices, image_size, batch_size, crop_fraction)
    chunks = [embed(x).numpy() for x in images]
    if not chunks:
        return np.zeros([0, verifier.embedding_dim], np.float32)
    return np.concatenate(chunks)


def score_index_pairs(verifier, embeddings, rows_first, rows_second, chunk=8192):
    """Scores of embedding-row pairs, in chunks."""
    out = []
    for start in range(0, len(rows_first), chunk):
        e1 = embeddings[rows_first[start : start + chunk]]
        e2 = embeddings[rows_second[start : start + chunk]]
        out.append(verifier.score_embeddings(e1, e2).numpy())
    return np.concatenate(out) if out else np.zeros([0], np.float32)


def embed_plan(verifier, table, plan, image_size, batch_size=256, crop_fraction=1.0):
    """(sorted image indices, their embeddings): every image of the plan's pairs and trials, embedded once."""
    groups = [plan.validation.first, plan.validation.second, plan.evaluation.first, plan.evaluation.second]
    for trial in plan.trials.values():
        if trial is not None:
            groups += [trial[0], trial[1].ravel()]
    unique = np.unique(np.concatenate(groups))
    return unique, embed_images(verifier, table, unique, image_size, batch_size, crop_fraction)


def score_embedded(verifier, unique, embeddings, plan):
    """Scores of the plan's validation pairs, evaluation pairs and trials from `embed_plan`'s embeddings."""

    def row(indices):
        return np.searchsorted(unique, indices)

    out = {
        "val_scores": score_index_pairs(verifier, embeddings, row(plan.validation.first), row(plan.validation.second)),
        "eval_scores": score_index_pairs(verifier, embeddings, row(plan.evaluation.first), row(plan.evaluation.second)),
    }
    for n, trial in plan.trials.items():
        if trial is None:
            continue
        queries, candidates = trial
        q = np.repeat(row(queries), candidates.shape[1])
        scores = score_index_pairs(verifier, embeddings, q, row(candidates.ravel()))
        out[f"one_shot_{n}way_scores"] = scores.reshape(candidates.shape)
    return out


def score_plan(verifier, table, plan, image_size, batch_size=256, crop_fraction=1.0):
    """Scores of the plan's validation pairs, evaluation pairs and trials; every image embedded once."""
    unique, embeddings = embed_plan(verifier, table, plan, image_size, batch_size, crop_fraction)
    return score_embedded(verifier, unique, embeddings, plan)


def decision_threshold(val_labels, val_scores):
    """`pair_metrics.best_threshold` on validation pairs, kept finite.

    When calling every validation pair "different" is best, the threshold returned is
    +inf; the next float above the largest validation score decides the same and can be
    stored and written to JSON.
    """
    threshold, val_accuracy = pair_metrics.best_threshold(val_labels, val_scores)
    if not np.isfinite(threshold):
        threshold = float(np.nextafter(np.max(val_scores), np.inf))
    return float(threshold), float(val_accuracy)


def tar_note(eval_labels):
    """Why tar_at_far_1e-2 is not measured on these evaluation pairs (too few negatives), or None."""
    negatives, needed = int(np.sum(np.asarray(eval_labels) == 0)), pair_metrics.min_negatives(FAR)
    if negatives >= needed:
        return None
    return (
        f"tar_at_far_1e-2 not measured: a false accept rate of {FAR:g} needs at least {needed} negative evaluation "
        f"pairs, there are {negatives}; raise --num_eval_pairs to {2 * needed} or more"
    )


def _measured(value):
    return None if np.isnan(value) else value


def verification_metrics(val_labels, val_scores, eval_labels, eval_scores, trial_scores, threshold=None):
    """The job's figures from scores (all through `pair_metrics`).

    threshold: the decision threshold; default: chosen on the validation pairs.
    trial_scores: {N: [T, N] scores with column 0 the match, or None}.
    """
    val_accuracy = None
    if threshold is None:
        threshold, val_accuracy = decision_threshold(val_labels, val_scores)
    eer, eer_threshold = pair_metrics.equal_error_rate(eval_labels, eval_scores)
    metrics = {
        "roc_auc": pair_metrics.roc_auc(eval_labels, eval_scores),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "accuracy": pair_metrics.accuracy_at_threshold(eval_labels, eval_scores, threshold),
        "threshold": float(threshold),
        "val_accuracy": val_accuracy,
        "tar_at_far_1e-2": _measured(pair_metrics.tar_at_far(eval_labels, eval_scores, far=FAR)),
    }
    for n in N_WAYS:
        scores = trial_scores.get(n)
        metrics[f"one_shot_{n}way"] = None if scores is None else pair_metrics.n_way_accuracy(scores)
    return metrics
