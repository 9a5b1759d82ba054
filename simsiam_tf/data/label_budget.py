"""Label budgets: the few labelled images of a semi-supervised evaluation, drawn per class from a seed.

SimCLR and BYOL evaluate with 1% and 10% of ImageNet's labels, a class-balanced subset;
on small sets "10 labels per class" is the common form. `draw_label_budget` is the one
rule both `simsiam-linear` and `simsiam-verify` use, so the same seed gives the same
labelled images in both:

- classes are visited in increasing order; for each, its images' positions are permuted
  by one NumPy generator seeded with `(seed, LABEL_BUDGET_STREAM)` and the first `k` kept;
- `labels_per_class=N`: `k = N` (a class with fewer than N images is an error);
- `label_fraction=F`: `k = floor(F * n + 0.5)` of a class's `n` images, at least 1.

The result records what a metrics.json needs to reproduce it: counts per class, the
seed and a hash of the chosen positions.
"""

import dataclasses
import hashlib
import math
from typing import Dict, Optional

import numpy as np

from simsiam_tf import config

# Stream id of the label-budget generator, apart from the streams of data order and augmentation.
LABEL_BUDGET_STREAM = 11


@dataclasses.dataclass(frozen=True, eq=False)
class LabelBudget:
    """The labelled subset: `indices` (sorted int64 positions into the labels given) and how it was drawn."""

    indices: np.ndarray
    counts: Dict[int, int]
    seed: int
    labels_per_class: Optional[int] = None
    label_fraction: Optional[float] = None

    @property
    def sha256(self):
        """Hex SHA-256 of the positions as little-endian int64: equal hashes, equal subsets."""
        return hashlib.sha256(np.asarray(self.indices, "<i8").tobytes()).hexdigest()

    def describe(self):
        """What metrics.json records about the budget."""
        rule = (
            {"labels_per_class": self.labels_per_class}
            if self.labels_per_class is not None
            else {"label_fraction": self.label_fraction}
        )
        return dict(
            rule,
            num_labelled=int(self.indices.size),
            counts_per_class={str(c): n for c, n in self.counts.items()},
            seed=self.seed,
            indices_sha256=self.sha256,
        )

    def summary(self):
        rule = (
            f"{self.labels_per_class} per class"
            if self.labels_per_class is not None
            else f"fraction {self.label_fraction:g} per class"
        )
        return (
            f"label budget: {self.indices.size} labelled images ({rule}, {len(self.counts)} classes, seed {self.seed})"
        )


def check_budget_args(labels_per_class, label_fraction):
    """Raises ValueError unless at most one budget is given and it is in range."""
    config.check_label_budget(labels_per_class, label_fraction)


def per_class_count(num_images, label_fraction):
    """How many of a class's `num_images` a fraction keeps: rounded half up, at least 1."""
    return min(num_images, max(1, int(math.floor(label_fraction * num_images + 0.5))))


def draw_label_budget(labels, labels_per_class=None, label_fraction=None, seed=0):
    """The labelled subset of `labels` (int class ids, one per image) under one budget; see the module doc.

    Returns a `LabelBudget`. Raises ValueError when neither or both budgets are given,
    when a budget is out of range, or when a class has fewer images than `labels_per_class`.
    """
    check_budget_args(labels_per_class, label_fraction)
    if labels_per_class is None and label_fraction is None:
        raise ValueError("a label budget needs labels_per_class or label_fraction")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"labels must be a 1-D array of integer class ids, got shape {labels.shape} {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("a label budget needs labelled images, but some labels are -1 (an unlabelled folder?)")
    rng = np.random.default_rng([int(seed), LABEL_BUDGET_STREAM])
    chosen, counts = [], {}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if labels_per_class is not None:
            if members.size < labels_per_class:
                raise ValueError(
                    f"class {int(c)} has {members.size} images, fewer than labels_per_class={labels_per_class}: "
                    "lower --labels_per_class, or use --label_fraction"
                )
            k = labels_per_class
        else:
            k = per_class_count(members.size, label_fraction)
        chosen.append(rng.permutation(members)[:k])
        counts[int(c)] = int(k)
    indices = np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros([0], np.int64)
    return LabelBudget(indices, counts, int(seed), labels_per_class, label_fraction)


def source_labels(source):
    """The class id of every image of a labelled `sources.Source`, in its order (streamed sources are read once)."""
    if source.random_access:
        labels = np.asarray(source.records[-1])
        if labels.ndim == 1 and labels.dtype.kind in "iu" and labels.shape[0] == source.num_examples:
            return labels.astype(np.int64)
    return np.fromiter((int(y) for _, y in source.dataset.as_numpy_iterator()), np.int64)


def subset_source(source, indices):
    """The images of `source` at `indices` (sorted positions) as a `sources.Source` of its own, order kept."""
    import tensorflow as tf

    from simsiam_tf.data import sources

    indices = np.asarray(indices, np.int64)
    if source.random_access:
        records = tuple(tf.gather(r, indices) for r in source.records)
        return sources.records_source(
            records, source.decode, source.num_classes, source.image_shape, source.class_names, source.name
        )
    keep = np.zeros([source.num_examples], bool)
    keep[indices] = True
    keep = tf.constant(keep)

    def kept(dataset):
        return dataset.enumerate().filter(lambda i, element: keep[i]).map(lambda i, element: element)

    records = kept(source.records) if isinstance(source.records, tf.data.Dataset) else None
    return dataclasses.replace(source, dataset=kept(source.dataset), num_examples=int(indices.size), records=records)
