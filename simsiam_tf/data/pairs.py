"""Pairs, triplets and N-way one-shot trials from labelled image sources.

Pair verification asks "are these two images of the same class (identity, character,
shape)?". This module turns a labelled `sources.Source` into:

- pools: the images used for training, for choosing the decision threshold
  (validation) and for reporting (evaluation). By default the evaluation classes are
  never seen in training (open set); `closed_set=True` uses every class everywhere
  and splits each class's images instead.
- training streams (tf.data, infinite, deterministic in (seed, step)): balanced
  batches of positive and negative pairs, or of (anchor, positive, negative) triplets.
- fixed evaluation sets (NumPy, seeded): balanced pairs, and N-way one-shot trials as
  in the Omniglot protocol (Koch et al. 2015): a query and N candidates of N distinct
  classes, exactly one of them the query's class.

Images are read one at a time and resized to the model's size before batching, so a
source whose images differ in size gives batches all the same.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from simsiam_tf import augment as augment_lib
from simsiam_tf.config import VERIFY_AUGMENTS, check_choice
from simsiam_tf.data import sources
from simsiam_tf.data.pipeline import fold_in, stream_seed

AUTOTUNE = tf.data.AUTOTUNE
AUGMENTS = VERIFY_AUGMENTS
# Random-resized-crop area range of training pairs: mild, since both images of a pair
# must keep enough of the object to be compared.
TRAIN_CROP_SCALE = (0.5, 1.0)


# --------------------------------------------------------------------------- images


@dataclasses.dataclass(frozen=True, eq=False)
class ImageTable:
    """Random-access images of one source.

    records / decode: as `sources.Source` (`decode(*record) -> (image uint8, label)`; None
        when the records are `(images, labels)` already).
    labels: int64 `[N]` class ids (NumPy).
    class_names: one name per class id, or empty when the source has none.
    """

    records: Tuple[tf.Tensor, ...]
    decode: Optional[object]
    labels: np.ndarray
    class_names: Tuple[str, ...]
    name: str

    @property
    def num_images(self):
        return int(self.labels.shape[0])

    def load(self, index):
        """The image at `index` (a scalar tensor) as uint8 `[H, W, 3]`; usable inside tf.data."""
        record = [tf.gather(r, index) for r in self.records]
        image = self.decode(*record)[0] if self.decode is not None else record[0]
        image = tf.convert_to_tensor(image)
        image.set_shape([None, None, 3])
        return image


def image_table(source):
    """An `ImageTable` of a labelled `sources.Source`; streamed sources are read into memory once."""
    if isinstance(source, ImageTable):
        return source
    if not source.labelled:
        raise ValueError(
            f"pair verification needs labelled images, but {source.name!r} has no labels "
            "(a flat folder?): use one sub-folder of images per class"
        )
    names = tuple(source.class_names) if len(source.class_names) == source.num_classes else ()
    if source.random_access:
        labels = np.asarray(source.records[-1])
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.shape[0] != source.num_examples:
            labels = np.asarray([int(y) for _, y in source.dataset.as_numpy_iterator()], np.int64)
        return ImageTable(tuple(source.records), source.decode, labels.astype(np.int64), names, source.name)
    images, labels = [], []
    for image, label in source.dataset.as_numpy_iterator():
        images.append(image)
        labels.append(int(label))
    if len({im.shape for im in images}) == 1:
        records = (tf.constant(np.stack(images)), tf.constant(np.asarray(labels, np.int64)))
        decode = None
    else:
        encoded = [tf.io.encode_png(im).numpy() for im in images]
        records = (tf.constant(encoded), tf.constant(np.asarray(labels, np.int64)))
        decode = _decode_png
    return ImageTable(records, decode, np.asarray(labels, np.int64), names, source.name)


def _decode_png(encoded, label):
    image = tf.io.decode_png(encoded, channels=3)
    return image, label


def prepare_image(image, image_size, seed=None, augment="none", crop_fraction=1.0):
    """One uint8 image of any size -> float32 `[image_size, image_size, 3]` in [0, 1].

    crop_fraction: first keep the central crop_fraction of each side (for images whose
    subject fills only the middle, as LFW's faces).
    augment: "none" (plain resize: pair datasets are aligned, so the whole image is
    kept), "crop" (random resized crop of `TRAIN_CROP_SCALE`) or "crop_flip" (and a
    random horizontal flip); the random ones need `seed`.
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must lie in (0, 1], got {crop_fraction}")
    if crop_fraction < 1.0:
        image = tf.image.central_crop(image, crop_fraction)
    if augment == "none":
        return augment_lib.eval_preprocess(image, image_size, center_crop=False)
    check_choice("augment", augment, AUGMENTS)
    flip = 0.5 if augment == "crop_flip" else 0.0
    return augment_lib.random_resized_crop(image, seed, image_size, scale=TRAIN_CROP_SCALE, flip_prob=flip)


# --------------------------------------------------------------------------- pools


@dataclasses.dataclass(frozen=True, eq=False)
class Pool:
    """The images of one role (train, validation, evaluation): positions into a table."""

    table: ImageTable
    indices: np.ndarray
    role: str

    @property
    def labels(self):
        return self.table.labels[self.indices]

    @property
    def classes(self):
        return np.unique(self.labels)

    @property
    def num_images(self):
        return int(self.indices.shape[0])

    def members(self):
        """{class id: table indices of its images in this pool}, classes in increasing order."""
        labels = self.labels
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        classes, starts = np.unique(sorted_labels, return_index=True)
        ends = np.r_[starts[1:], len(order)]
        return {int(c): self.indices[order[s:e]] for c, s, e in zip(classes, starts, ends)}


@dataclasses.dataclass(frozen=True, eq=False)
class PairPools:
    """Train, validation and evaluation pools; `open_set` when no evaluation class is trained on."""

    train: Pool
    validation: Pool
    evaluation: Pool
    open_set: bool

    def summary(self):
        return {
            role: {"images": pool.num_images, "classes": int(pool.classes.size)}
            for role, pool in (("train", self.train), ("validation", self.validation), ("evaluation", self.evaluation))
        }


def check_pool(pool, hint=""):
    """Raises ValueError unless `pool` can give negative pairs (2 classes) and positive pairs (a class of 2)."""
    members = pool.members()
    if len(members) < 2:
        raise ValueError(
            f"the {pool.role} images of {pool.table.name!r} cover {len(members)} class(es); pair verification "
            f"needs at least 2 (a negative pair shows two different classes){hint}"
        )
    if max(len(m) for m in members.values()) < 2:
        raise ValueError(
            f"every class among the {pool.role} images of {pool.table.name!r} has a single image "
            f"({len(members)} classes), so no positive (same-class) pair can be made: each role needs "
            f"classes with at least two images{hint}"
        )
    return pool


def split_classes(classes, eval_fraction=0.5, seed=0):
    """(train classes, evaluation classes): a seeded random split of the class list, both sorted.

    The rule: permute the sorted class ids with NumPy's generator seeded by (seed, 1);
    the first round(len * eval_fraction) (at least 1) are the evaluation classes.
    """
    classes = np.unique(np.asarray(classes, np.int64))
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction}")
    order = np.random.default_rng([seed, 1]).permutation(classes)
    k = min(max(1, int(round(len(classes) * eval_fraction))), max(len(classes) - 1, 1))
    return np.sort(order[k:]), np.sort(order[:k])


def _split_images(pool_indices, labels, fraction, rng):
    """Per class, floor(n * fraction) images (chosen at random) go to the second part."""
    first, second = [], []
    for c in np.unique(labels):
        members = rng.permutation(pool_indices[labels == c])
        k = int(len(members) * fraction)
        second.append(members[:k])
        first.append(members[k:])
    return _join(first), _join(second)


def _join(parts):
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros([0], np.int64)


def _unify_labels(train, evaluation):
    """Maps the evaluation table's class ids onto the train table's by class name, when both have names.

    Folder splits number their classes per split, so the same name can carry different
    ids; TFDS class labels already agree and map to themselves.
    """
    if not (train.class_names and evaluation.class_names):
        return evaluation
    index = {name: i for i, name in enumerate(train.class_names)}
    names = list(train.class_names)
    mapping = np.empty(len(evaluation.class_names), np.int64)
    for i, name in enumerate(evaluation.class_names):
        if name not in index:
            index[name] = len(names)
            names.append(name)
        mapping[i] = index[name]
    if np.array_equal(mapping, np.arange(len(mapping))):
        return evaluation
    return dataclasses.replace(evaluation, labels=mapping[evaluation.labels], class_names=tuple(names))


def make_pools(train_source, eval_source=None, closed_set=False, eval_fraction=0.5, val_fraction=0.3, seed=0):
    """Train / validation / evaluation pools of a labelled source (or of a train and an eval source).

    Open set (default): training and evaluation classes are disjoint.
      - one source, or two whose classes overlap: the class list is split by
        `split_classes(eval_fraction, seed)`; training uses the train source's images
        of the training classes, evaluation the eval source's images of the others.
      - two sources with disjoint classes (Omniglot: background vs evaluation
        alphabets): the sources are the split.
    Closed set: every class takes part everywhere. Two sources: train on the first,
      evaluate on the second. One source: `eval_fraction` of each class's images are
      held out for evaluation.
    In both, `val_fraction` of each evaluation class's images are set aside as
    validation images (for the decision threshold), so the threshold is chosen on
    classes the model was not trained on, and the reported pairs share no image with it.

    Raises ValueError naming the problem when a role ends up with fewer than 2 classes
    or with no class of two images (no positive pair).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction}")
    train_table = image_table(train_source)
    eval_table = None if eval_source is None else _unify_labels(train_table, image_table(eval_source))
    all_classes = np.unique(train_table.labels if eval_table is None else np.r_[train_table.labels, eval_table.labels])
    if all_classes.size < 2:
        raise ValueError(
            f"{train_table.name!r} has {all_classes.size} class(es); pair verification needs at least 2 "
            "(a negative pair shows two different classes)"
        )
    train_all = np.arange(train_table.num_images, dtype=np.int64)
    rng = np.random.default_rng([seed, 3])

    if eval_table is None:
        eval_table_ = train_table
        if closed_set:
            train_idx, eval_idx = _split_images(train_all, train_table.labels, eval_fraction, rng)
        else:
            train_classes, eval_classes = _checked_class_split(all_classes, eval_fraction, seed)
            train_idx = train_all[np.isin(train_table.labels, train_classes)]
            eval_idx = train_all[np.isin(train_table.labels, eval_classes)]
    else:
        eval_table_ = eval_table
        eval_all = np.arange(eval_table.num_images, dtype=np.int64)
        shared = np.intersect1d(np.unique(train_table.labels), np.unique(eval_table.labels))
        if closed_set:
            if shared.size == 0:
                raise ValueError(
                    f"closed-set evaluation needs the evaluation classes among the training classes, but the "
                    f"train and evaluation splits of {train_table.name!r} share no class: use the same split for "
                    "both (it is then divided per class), or the open-set default"
                )
            unseen = np.setdiff1d(np.unique(eval_table.labels), shared)
            if unseen.size:
                names = [eval_table.class_names[c] if eval_table.class_names else str(c) for c in unseen]
                raise ValueError(
                    f"closed-set evaluation needs every evaluation class among the training classes, but "
                    f"{', '.join(names)} of {eval_table.name!r} have no training images: add training images of "
                    "them, remove them from the evaluation split, or use the open-set default"
                )
            train_idx, eval_idx = train_all, eval_all
        elif shared.size == 0:
            train_idx, eval_idx = train_all, eval_all
        else:
            train_classes, eval_classes = _checked_class_split(all_classes, eval_fraction, seed)
            train_idx = train_all[np.isin(train_table.labels, train_classes)]
            eval_idx = eval_all[np.isin(eval_table.labels, eval_classes)]

    test_idx, val_idx = _split_images(eval_idx, eval_table_.labels[eval_idx], val_fraction, rng)
    hint = "" if closed_set else "; use more classes, or closed_set=True (--closed_set)"
    pools = PairPools(
        train=check_pool(Pool(train_table, train_idx, "train"), hint),
        validation=check_pool(Pool(eval_table_, val_idx, "validation"), _val_hint(val_fraction)),
        evaluation=check_pool(Pool(eval_table_, test_idx, "evaluation"), hint),
        open_set=not closed_set,
    )
    return pools


def _val_hint(val_fraction):
    return f" (validation takes {val_fraction:g} of each evaluation class's images; raise val_fraction)"


def _checked_class_split(classes, eval_fraction, seed):
    train_classes, eval_classes = split_classes(classes, eval_fraction, seed)
    if train_classes.size < 2 or eval_classes.size < 2:
        raise ValueError(
            f"an open-set split of {classes.size} classes leaves {train_classes.size} for training and "
            f"{eval_classes.size} for evaluation; each needs at least 2: use a dataset with more classes, "
            "another eval_fraction, or closed_set=True (--closed_set)"
        )
    return train_classes, eval_classes


# --------------------------------------------------------------------------- fixed evaluation sets


@dataclasses.dataclass(frozen=True, eq=False)
class PairSet:
    """Pairs as table indices: `first[i]`, `second[i]`, `labels[i]` 1 = same class, 0 = different."""

    first: np.ndarray
    second: np.ndarray
    labels: np.ndarray


def make_eval_pairs(pool, num_pairs, seed=0):
    """A fixed, balanced set of pairs: num_pairs // 2 positives, the rest negatives (seeded).

    Positives: a class with two or more images uniformly, then two distinct images of
    it. Negatives: two distinct classes uniformly, one image of each. Classes rather than
    images are drawn uniformly, so large classes do not dominate.
    """
    if num_pairs < 2:
        raise ValueError(f"num_pairs must be at least 2 (one positive, one negative), got {num_pairs}")
    check_pool(pool)
    members = pool.members()
    classes = np.asarray(sorted(members))
    multi = np.asarray([c for c in classes if len(members[c]) >= 2])
    rng = np.random.default_rng([seed, 5])
    n_pos = num_pairs // 2
    n_neg = num_pairs - n_pos
    first, second = [], []
    for c in rng.choice(multi, n_pos):
        i, j = rng.choice(members[c], 2, replace=False)
        first.append(i)
        second.append(j)
    for _ in range(n_neg):
        a, b = rng.choice(classes, 2, replace=False)
        first.append(rng.choice(members[a]))
        second.append(rng.choice(members[b]))
    labels = np.r_[np.ones(n_pos, np.int64), np.zeros(n_neg, np.int64)]
    return PairSet(np.asarray(first, np.int64), np.asarray(second, np.int64), labels)


def make_n_way_trials(pool, n_way, num_trials, seed=0):
    """N-way one-shot trials: (queries int64 [T], candidates int64 [T, N]) as table indices.

    Each trial draws N distinct classes, the first one with two or more images; the
    query and candidate 0 are two distinct images of that class, candidates 1..N-1 one
    image of each other class (column 0 is the match, as `pair_metrics.n_way_accuracy`
    expects). Raises ValueError when the pool has fewer than N classes.
    """
    if n_way < 2:
        raise ValueError(f"n_way must be at least 2, got {n_way}")
    if num_trials < 1:
        raise ValueError(f"num_trials must be positive, got {num_trials}")
    members = pool.members()
    classes = np.asarray(sorted(members))
    if classes.size < n_way:
        raise ValueError(
            f"{n_way}-way trials need {n_way} distinct classes, but the {pool.role} images cover {classes.size}"
        )
    multi = np.asarray([c for c in classes if len(members[c]) >= 2])
    if multi.size == 0:
        check_pool(pool)
    rng = np.random.default_rng([seed, 7, n_way])
    queries = np.empty(num_trials, np.int64)
    candidates = np.empty((num_trials, n_way), np.int64)
    for t in range(num_trials):
        match = rng.choice(multi)
        queries[t], candidates[t, 0] = rng.choice(members[match], 2, replace=False)
        others = rng.choice(classes[classes != match], n_way - 1, replace=False)
        candidates[t, 1:] = [rng.choice(members[c]) for c in others]
    return queries, candidates


# --------------------------------------------------------------------------- training streams


class _ClassIndex:
    """A pool's images grouped by class, as tensors for sampling inside tf.data."""

    def __init__(self, pool):
        check_pool(pool)
        members = pool.members()
        groups = [members[c] for c in sorted(members)]
        counts = np.asarray([len(g) for g in groups], np.int64)
        self.flat = tf.constant(np.concatenate(groups), tf.int64)
        self.classes = tf.constant(np.asarray(sorted(members), np.int64))
        self.counts = tf.constant(counts)
        self.offsets = tf.constant(np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64))
        self.multi = tf.constant(np.flatnonzero(counts >= 2).astype(np.int64))
        self.num_classes = len(groups)

    @staticmethod
    def _below(seed, n, upper):
        """Uniform integers in [0, upper) per element (upper an int64 tensor [n], >= 1)."""
        u = tf.random.stateless_uniform([n], seed, dtype=tf.float64)
        k = tf.cast(tf.floor(u * tf.cast(upper, tf.float64)), tf.int64)
        return tf.minimum(k, upper - 1)

    def _image(self, seed, n, positions):
        """A random image of each class position."""
        counts = tf.gather(self.counts, positions)
        return tf.gather(self.flat, tf.gather(self.offsets, positions) + self._below(seed, n, counts))

    def same_class(self, seed, n):
        """n pairs of distinct images of one class: (first, second, class positions)."""
        s = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        num_multi = tf.fill([n], tf.size(self.multi, out_type=tf.int64))
        positions = tf.gather(self.multi, self._below(s[0], n, num_multi))
        counts = tf.gather(self.counts, positions)
        offsets = tf.gather(self.offsets, positions)
        i = self._below(s[1], n, counts)
        j = (i + 1 + self._below(s[2], n, counts - 1)) % counts
        return tf.gather(self.flat, offsets + i), tf.gather(self.flat, offsets + j), positions

    def other_class(self, seed, positions):
        """For each class position, a uniformly drawn different one."""
        n = tf.shape(positions, out_type=tf.int64)[0]
        step = 1 + self._below(seed, n, tf.fill([n], tf.constant(self.num_classes - 1, tf.int64)))
        return (positions + step) % self.num_classes

    def label(self, positions):
        return tf.gather(self.classes, positions)


def _sample_pairs(index, seed, batch_size):
    n_pos = batch_size // 2
    n_neg = batch_size - n_pos
    s = tf.unstack(tf.random.experimental.stateless_split(seed, 5))
    pos_a, pos_b, _ = index.same_class(s[0], n_pos)
    num = tf.fill([n_neg], tf.constant(index.num_classes, tf.int64))
    first_class = index._below(s[1], n_neg, num)
    second_class = index.other_class(s[2], first_class)
    neg_a = index._image(s[3], n_neg, first_class)
    neg_b = index._image(s[4], n_neg, second_class)
    labels = tf.concat([tf.ones([n_pos], tf.int64), tf.zeros([n_neg], tf.int64)], 0)
    return tf.concat([pos_a, neg_a], 0), tf.concat([pos_b, neg_b], 0), labels


def _sample_triplets(index, seed, batch_size):
    s = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    anchor, positive, positions = index.same_class(s[0], batch_size)
    negative_class = index.other_class(s[1], positions)
    negative = index._image(s[2], batch_size, negative_class)
    return anchor, positive, negative, index.label(positions), index.label(negative_class)


def pair_batch_indices(pool, batch_size, seed=0, step=0):
    """The table indices of training pair batch `step`: (first, second, labels) as NumPy arrays."""
    first, second, labels = _sample_pairs(_ClassIndex(pool), _step_seed(seed, 11, step), batch_size)
    return first.numpy(), second.numpy(), labels.numpy()


def triplet_batch_indices(pool, batch_size, seed=0, step=0):
    """The table indices of training triplet batch `step`: (anchor, positive, negative, anchor class, negative class)."""
    out = _sample_triplets(_ClassIndex(pool), _step_seed(seed, 13, step), batch_size)
    return tuple(t.numpy() for t in out)


def _step_seed(seed, stream, step):
    base = stream_seed(seed, stream)
    return fold_in(base, tf.cast(step, tf.int64))


def _check_stream_args(batch_size, start_step, augment, minimum):
    if batch_size < minimum:
        raise ValueError(f"batch_size must be at least {minimum}, got {batch_size}")
    if start_step < 0:
        raise ValueError(f"start_step must be non-negative, got {start_step}")
    check_choice("augment", augment, AUGMENTS)


def _stream(pool, batch_size, image_size, seed, start_step, augment, crop_fraction, stream, sample, num_images):
    """Shared pipeline: per step, `sample(seed) -> (indices..., labels...)`; images loaded and prepared one by one."""
    index = _ClassIndex(pool)
    table = pool.table
    base = stream_seed(seed, stream)
    image_base = fold_in(base, 1)

    # Plain TF ops without Python control flow on tensors: skipping AutoGraph's
    # conversion of the augmentation code makes building the pipeline several times faster.
    @tf.autograph.experimental.do_not_convert
    def per_step(step):
        out = sample(index, fold_in(base, step), batch_size)
        return (tf.fill([batch_size], step), tf.range(batch_size, dtype=tf.int64)) + tuple(out)

    @tf.autograph.experimental.do_not_convert
    def per_element(step, k, *fields):
        element_seed = fold_in(fold_in(image_base, step), k)
        seeds = tf.unstack(tf.random.experimental.stateless_split(element_seed, num_images))
        images = tuple(
            prepare_image(table.load(i), image_size, seeds[n], augment, crop_fraction)
            for n, i in enumerate(fields[:num_images])
        )
        return images + tuple(fields[num_images:])

    elements = tf.data.Dataset.counter(start_step, dtype=tf.int64).map(per_step).unbatch()
    elements = elements.map(per_element, num_parallel_calls=AUTOTUNE, deterministic=True)
    return elements.batch(batch_size, drop_remainder=True)


def make_pair_dataset(pool, batch_size, image_size, seed=0, start_step=0, augment="crop_flip", crop_fraction=1.0):
    """Infinite stream of balanced pair batches `((x1, x2), labels)` from a pool.

    x1, x2: float32 `[B, S, S, 3]` in [0, 1]; labels int64 `[B]`, the first B // 2
    pairs positive (same class, two distinct images), the rest negative (two distinct
    classes). Deterministic in (seed, step): starting at `start_step` gives batches
    `start_step, ...` of a stream started at 0. `augment`, `crop_fraction`: as
    `prepare_image`.
    """
    _check_stream_args(batch_size, start_step, augment, 2)
    stream = _stream(pool, batch_size, image_size, seed, start_step, augment, crop_fraction, 11, _sample_pairs, 2)
    return stream.map(lambda x1, x2, y: ((x1, x2), y)).prefetch(AUTOTUNE)


def make_class_triplet_dataset(
    pool, batch_size, image_size, seed=0, start_step=0, augment="crop_flip", crop_fraction=1.0
):
    """Infinite stream of triplet batches `((anchor, positive, negative), (anchor_class, negative_class))`.

    Each triplet: two distinct images of one class and an image of another class. The
    images are float32 `[B, S, S, 3]`, the class ids int64 `[B]` (for in-batch mining:
    anchors and positives carry `anchor_class`). Deterministic in (seed, step).
    """
    _check_stream_args(batch_size, start_step, augment, 1)
    stream = _stream(pool, batch_size, image_size, seed, start_step, augment, crop_fraction, 13, _sample_triplets, 3)
    return stream.map(lambda a, p, n, ya, yn: ((a, p, n), (ya, yn))).prefetch(AUTOTUNE)


def make_image_dataset(table, indices, image_size, batch_size=256, crop_fraction=1.0):
    """Finite, ordered batches of the images at `indices` (float32 `[b, S, S, 3]`, no augmentation)."""
    indices = tf.constant(np.asarray(indices, np.int64))
    load = tf.autograph.experimental.do_not_convert(
        lambda i: prepare_image(table.load(i), image_size, crop_fraction=crop_fraction)
    )
    dataset = tf.data.Dataset.from_tensor_slices(indices).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def load_images(table, indices, image_size, crop_fraction=1.0):
    """The images at `indices` as one float32 NumPy array `[n, S, S, 3]`, as evaluation sees them."""
    dataset = make_image_dataset(table, indices, image_size, max(1, len(indices)), crop_fraction)
    batches = list(dataset.as_numpy_iterator())
    return batches[0] if batches else np.zeros([0, image_size, image_size, 3], np.float32)


# --------------------------------------------------------------------------- sources


def load_labelled_source(
    name,
    split="train",
    data_dir=None,
    image_size=32,
    seed=0,
    num_examples=None,
    on_corrupt="error",
    download=False,
    holdout=None,
):
    """`sources.load_source`, with TFDS datasets whose class is a name (LFW's identities) read as classes."""
    return sources.load_source(
        name,
        split=split,
        data_dir=data_dir,
        image_size=image_size,
        seed=seed,
        num_examples=num_examples,
        on_corrupt=on_corrupt,
        download=download,
        identities=True,
        holdout=holdout,
    )
