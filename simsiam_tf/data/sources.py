"""Image sources: the synthetic set, TFDS datasets and image folders, behind one `Source`.

A `Source` is a dataset of `(image uint8 [H, W, 3], label int64)` plus what the
pipelines (`simsiam_tf.data.pipeline`, `pairs`, `tiles`) need to know about it.
"""

import dataclasses
import math
import os
from typing import Any, Callable, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from simsiam_tf import progress
from simsiam_tf.data import holdout as holdout_lib
from simsiam_tf.data.synthetic import SYNTHETIC_PATTERNS, SYNTHETIC_SPLITS, make_synthetic

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# TFDS splits whose encoded images fit in this many bytes are read into memory once,
# which gives them exact per-epoch shuffling; larger ones stream from their files.
IN_MEMORY_MAX_BYTES = 1 << 30


def map_ordered(dataset, fn, parallel=True):
    """`dataset.map` without AutoGraph (the functions have no tensor-dependent Python
    control flow, and converting the augmentation graph is slow), order kept."""
    fn = tf.autograph.experimental.do_not_convert(fn)
    if parallel:
        return dataset.map(fn, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.map(fn)


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """A set of images and labels, and what the pipelines need to know about it.

    dataset: `(image uint8 [H, W, 3], label int64)` in a fixed order; label -1 when
        the source is unlabelled.
    num_examples: number of elements of `dataset`.
    num_classes: 0 when unlabelled.
    image_shape: `(H, W, 3)` when every image has it, None when sizes vary.
    class_names: one name per class (empty when unlabelled).
    name: what the user asked for ("synthetic", a TFDS name, "folder").
    records / decode: the same elements before decoding, for the training pipelines.
        `records` is either a tuple of arrays indexed along their first axis (random
        access: the pipelines shuffle exactly, per epoch) or a `tf.data.Dataset`
        (streamed; shuffled through a buffer). `decode(*record)` gives
        `(image, label)`; None means the records already are `(images, labels)`.
    epoch_records: streamed sources stored in several files: `epoch_records(seed)`
        gives the elements of `records` with the files read in an order drawn from
        the stateless `seed` [2]; the pipelines pass a seed of (seed, epoch), so the
        file order changes every epoch and a resumed run reads the same one.
    read: for sources of image files (folders): `read(*record)` gives
        `(encoded bytes, label)`, so the pretraining pipeline can cut its crops from
        the file itself (JPEG windows drawn from the header, partial decodes).
    holdout: for a part of a folder cut by `simsiam_tf.data.holdout`: its `Holdout` record.
    """

    dataset: tf.data.Dataset
    num_examples: int
    num_classes: int
    image_shape: Optional[Tuple[int, int, int]]
    class_names: Tuple[str, ...]
    name: str
    records: Any = None
    decode: Optional[Callable] = None
    epoch_records: Optional[Callable] = None
    read: Optional[Callable] = None
    holdout: Any = None

    @property
    def labelled(self):
        return self.num_classes > 0

    @property
    def random_access(self):
        return isinstance(self.records, tuple)


def table_source(records, decode, num_classes, image_shape, class_names, name, read=None, holdout=None):
    records = tuple(tf.convert_to_tensor(r) for r in records)
    dataset = tf.data.Dataset.from_tensor_slices(records)
    if decode is not None:
        dataset = map_ordered(dataset, decode)
    return Source(
        dataset=dataset,
        num_examples=int(records[0].shape[0]),
        num_classes=num_classes,
        image_shape=image_shape,
        class_names=tuple(class_names),
        name=name,
        records=records,
        decode=decode,
        read=read,
        holdout=holdout,
    )


def _synthetic_source(split, image_size, seed, num_examples):
    if split not in SYNTHETIC_SPLITS:
        raise ValueError(f"the synthetic dataset has splits {sorted(SYNTHETIC_SPLITS)}, got split={split!r}")
    stream, default_size = SYNTHETIC_SPLITS[split]
    n = default_size if num_examples is None else num_examples
    split_seed = np.random.SeedSequence([seed, stream])
    images, labels = make_synthetic(n, image_size=image_size, seed=split_seed)
    return table_source(
        (images, labels), None, len(SYNTHETIC_PATTERNS), (image_size, image_size, 3), SYNTHETIC_PATTERNS, "synthetic"
    )


# --------------------------------------------------------------------------- TFDS


def decode_encoded(encoded, label):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image, tf.cast(label, tf.int64)


def _to_rgb(image, label):
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
    channels = image.shape[-1]
    if channels == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif channels == 4:
        image = image[..., :3]
    return image, tf.cast(label, tf.int64)


def _split_size(info, split):
    """(num_examples, num_bytes) that the dataset info records for a split; zeros when unknown."""
    try:
        split_info = info.splits[split]
        return int(split_info.num_examples or 0), int(split_info.num_bytes or 0)
    except (KeyError, ValueError, TypeError, AttributeError):
        return 0, 0


def _read_all(dataset, decode=None, int_labels=True):
    """Every element of a finite dataset of pairs as two NumPy arrays (the second as int64 with `int_labels`)."""
    if decode is not None:
        dataset = map_ordered(dataset, decode)
    firsts, seconds = [], []
    for first, second in dataset.batch(1024).as_numpy_iterator():
        firsts.append(first)
        seconds.append(second)
    if not firsts:
        return np.zeros([0]), np.zeros([0], np.int64)
    seconds = np.concatenate(seconds)
    return np.concatenate(firsts), seconds.astype(np.int64) if int_labels else seconds


def _identity_keys(info):
    """(image key, identity key) when the identity is not a class label; else None."""
    import tensorflow_datasets as tfds

    features = info.features
    supervised = tuple(info.supervised_keys or ())
    if len(supervised) == 2 and all(isinstance(k, str) for k in supervised):
        image_key = next((k for k in supervised if isinstance(features[k], tfds.features.Image)), None)
        label_key = next((k for k in supervised if k != image_key), None)
    else:
        image_key = next((k for k, f in features.items() if isinstance(f, tfds.features.Image)), None)
        label_key = "label" if "label" in features else None
    if image_key is None or label_key is None:
        return None
    if supervised and supervised[0] == image_key and isinstance(features[label_key], tfds.features.ClassLabel):
        return None
    return image_key, label_key


def _identity_source(raw, decode, image_shape, name, split):
    """A TFDS split whose class is a name (LFW's identities): each distinct name is a class, in sorted order."""
    images, identities = _read_all(raw, int_labels=False)
    if not len(images):
        raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty")
    names, labels = np.unique(identities, return_inverse=True)
    class_names = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)
    return table_source((images, labels.astype(np.int64)), decode, len(class_names), image_shape, class_names, name)


def file_order(num_files, seed):
    """A permutation of range(num_files) drawn from the stateless `seed` [2] (int64 [num_files])."""
    return tf.random.experimental.index_shuffle(tf.range(num_files, dtype=tf.int64), seed, num_files - 1)


def shuffled_file_records(filenames, skips, takes, parse, cycle_length=16, block_length=16):
    """`epoch_records(seed)` of a `Source` whose records are TFRecord files (a TFDS split's file instructions).

    Each call reads `takes[i]` records after `skips[i]` from every file, the files in
    the order `file_order(len(filenames), seed)`, `cycle_length` files interleaved
    (in blocks of `block_length` records, deterministically, as TFDS reads
    `shuffle_files=True`), each record through `parse`.
    """
    filenames = tf.constant(list(filenames), tf.string)
    skips = tf.constant(list(skips), tf.int64)
    takes = tf.constant(list(takes), tf.int64)
    count = int(filenames.shape[0])
    if count < 1:
        raise ValueError("shuffled_file_records needs at least one file")

    def read(filename, skip, take):
        return tf.data.TFRecordDataset(filename).skip(skip).take(take)

    def epoch_records(seed):
        order = file_order(count, seed)
        files = tf.data.Dataset.from_tensor_slices(
            (tf.gather(filenames, order), tf.gather(skips, order), tf.gather(takes, order))
        )
        records = files.interleave(
            read,
            cycle_length=min(cycle_length, count),
            block_length=block_length,
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        return map_ordered(records, parse)

    return epoch_records


def _tfds_epoch_records(builder, split, decoders, to_pair):
    """`shuffled_file_records` of a TFDS split, or None when its files are not TFRecord or there is only one."""
    file_format = getattr(builder.info, "file_format", None)
    if file_format is not None and getattr(file_format, "value", str(file_format)) != "tfrecord":
        return None
    try:
        instructions = builder.info.splits[split].file_instructions
    except (KeyError, ValueError, AttributeError):
        return None
    if len(instructions) < 2:
        return None
    features = builder.info.features

    def parse(serialized):
        return to_pair(features.deserialize_example(serialized, decoders=decoders))

    return shuffled_file_records(
        [i.filename for i in instructions], [i.skip for i in instructions], [i.take for i in instructions], parse
    )


def _tfds_source(name, split, data_dir, num_examples, download, identities=False):
    import tensorflow_datasets as tfds

    where = data_dir or "the default TFDS data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"unknown dataset {name!r}: use 'synthetic' (the built-in set), 'folder' with data_dir pointing "
            "at an image folder, or a TensorFlow Datasets name such as 'cifar10' or 'imagenet2012' "
            "(https://www.tensorflow.org/datasets/catalog/overview)"
        ) from None
    if download:
        builder.download_and_prepare()
    info = builder.info
    identity_keys = _identity_keys(info) if identities else None
    if identity_keys is not None:
        image_key, label_key = identity_keys
    else:
        image_key, label_key = info.supervised_keys if info.supervised_keys else (None, None)
    if image_key is None:
        image_key = next((k for k, f in info.features.items() if isinstance(f, tfds.features.Image)), None)
    feature = info.features[image_key] if isinstance(image_key, str) and image_key in info.features else None
    if not isinstance(feature, tfds.features.Image):
        raise ValueError(f"TFDS dataset {name!r} has no image input feature; it cannot be used here")
    # Encoded images stay bytes until the pipeline decodes them: shuffling and skipping are cheap.
    encoded = feature.np_dtype == np.uint8
    decoders = {image_key: tfds.decode.SkipDecoding()} if encoded else None
    try:
        raw = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    except AssertionError as error:
        raise ValueError(
            f"TFDS dataset {name!r} (split {split!r}) is not prepared in {where}. Prepare it once on a "
            f"machine with network: `tfds build {name} --data_dir=DIR` (imagenet2012 and a few others need "
            "their archives in DIR/downloads/manual first), then pass that DIR as data_dir; or load with "
            f"download=True. TFDS said: {error}"
        ) from None
    except ValueError as error:
        raise ValueError(f"TFDS dataset {name!r}: cannot read split {split!r} from {where}: {error}") from None

    if label_key is not None:

        def to_pair(ex):
            return ex[image_key], ex[label_key]
    else:

        def to_pair(ex):
            return ex[image_key], tf.constant(-1, tf.int64)

    raw = map_ordered(raw, to_pair, parallel=False)
    if num_examples is not None:
        raw = raw.take(num_examples)
    h, w, _ = feature.shape
    image_shape = (int(h), int(w), 3) if h and w else None
    decode = decode_encoded if encoded else _to_rgb
    if identity_keys is not None:
        return _identity_source(raw, decode, image_shape, name, split)
    count = int(raw.cardinality())
    split_examples, split_bytes = _split_size(info, split)
    if count < 0:
        count = split_examples if num_examples is None else min(split_examples, num_examples)
    if count <= 0:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} in {where} is empty")

    label_feature = info.features[label_key] if label_key is not None else None
    class_names = tuple(getattr(label_feature, "names", None) or ())
    num_classes = int(getattr(label_feature, "num_classes", 0) or 0)

    # Small splits are read into memory once: decoded when every image has the same
    # size (batches are then plain gathers), else still encoded.
    if image_shape is not None and count * h * w * 3 <= IN_MEMORY_MAX_BYTES:
        return table_source(_read_all(raw, decode), None, num_classes, image_shape, class_names, name)
    encoded_bytes = split_bytes * count / max(split_examples, count) if split_bytes else math.inf
    if encoded and encoded_bytes <= IN_MEMORY_MAX_BYTES:
        return table_source(_read_all(raw), decode, num_classes, image_shape, class_names, name)
    return Source(
        dataset=map_ordered(raw, decode),
        num_examples=count,
        num_classes=num_classes,
        image_shape=image_shape,
        class_names=class_names,
        name=name,
        records=raw,
        decode=decode,
        # A subset (num_examples) is the first images in the files' stored order; all of a split can vary it.
        epoch_records=None if num_examples is not None else _tfds_epoch_records(builder, split, decoders, to_pair),
    )


# --------------------------------------------------------------------------- image folders


def _image_files(folder, recursive):
    found = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    else:
        found = [
            os.path.join(folder, f)
            for f in os.listdir(folder)
            if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
        ]
    return sorted(found)


def _read_image(path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _find_corrupt(paths):
    """Decodes every file once, in parallel; returns (indices that fail, shapes of the others)."""
    scan = tf.data.Dataset.from_tensor_slices((paths, tf.range(len(paths))))
    scan = map_ordered(scan, lambda p, i: (i, tf.shape(_read_image(p))))
    scan = scan.ignore_errors()
    good, shapes = [], []
    with progress.Progress(len(paths), "checking image files") as shown:
        for index, shape in scan.as_numpy_iterator():
            good.append(index)
            shapes.append(tuple(shape))
            shown.update()
    bad = sorted(set(range(len(paths))) - set(good))
    return bad, shapes


def _split_root(data_dir, split):
    """data_dir/split when there is such a folder, else data_dir itself."""
    return os.path.join(data_dir, split) if split and os.path.isdir(os.path.join(data_dir, split)) else data_dir


def _class_dirs(root):
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))


def folder_class_names(data_dir, splits):
    """The label space of a folder dataset: the sorted union of the class folder names of `splits`
    (each data_dir/<split>, or data_dir itself), empty folders included, so that a class has one label
    in every split."""
    names = set()
    for root in {_split_root(data_dir, split) for split in splits}:
        names.update(_class_dirs(root))
    return tuple(sorted(names))


def _folder_source(data_dir, split, image_size, seed, num_examples, on_corrupt, label_splits=None, holdout=None):
    if not data_dir:
        raise ValueError(
            "dataset='folder' needs data_dir: a folder with one sub-folder of images per class, or a flat folder of images"
        )
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} does not exist or is not a folder (dataset='folder')")
    root = _split_root(data_dir, split)
    class_files = [(d, _image_files(os.path.join(root, d), recursive=True)) for d in _class_dirs(root)]
    loose = _image_files(root, recursive=False)
    if any(files for _, files in class_files):
        if loose:
            logging.warning("%s: %d image(s) outside the class sub-folders are ignored", root, len(loose))
        class_names = folder_class_names(data_dir, (split, *(label_splits or ())))
        label_of = {name: i for i, name in enumerate(class_names)}
        for d, files in class_files:
            if not files:
                logging.warning(
                    "class folder %s has no images (%s); the class keeps its label %d",
                    os.path.join(root, d),
                    ", ".join(IMAGE_EXTENSIONS),
                    label_of[d],
                )
        paths = [p for _, files in class_files for p in files]
        labels = [label_of[d] for d, files in class_files for _ in files]
    else:
        class_names = ()
        paths, labels = loose, [-1] * len(loose)
    if not paths:
        raise ValueError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root!r}: expected class sub-folders of "
            "images or a flat folder of images"
        )
    drawn = None
    if holdout is not None and holdout.fraction > 0 and root == data_dir and class_names:
        paths, labels, drawn = holdout_lib.cut_folder(data_dir, paths, labels, class_names, holdout)
        if not paths:
            raise ValueError(
                f"the {holdout.part} part of the hold-out of {data_dir!r} is empty: every class has a single "
                "image, so none can be held out; add images, or give train/ and test/ sub-folders"
            )
    paths = np.asarray(paths)
    labels = np.asarray(labels, np.int64)
    if num_examples is not None and num_examples < len(paths):
        keep = np.sort(np.random.default_rng(seed).permutation(len(paths))[:num_examples])
        paths, labels = paths[keep], labels[keep]

    bad, shapes = _find_corrupt(paths)
    if bad:
        names = [str(paths[i]) for i in bad]
        if on_corrupt == "error":
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            raise ValueError(
                f"{len(names)} image file(s) in {root!r} cannot be decoded: {shown}. Remove or fix them, "
                "or pass --on_corrupt=skip (Python: on_corrupt='skip') to leave them out with a warning"
            )
        for name in names:
            logging.warning("skipping corrupt image file %s", name)
        keep = np.setdiff1d(np.arange(len(paths)), bad)
        paths, labels = paths[keep], labels[keep]
        if not len(paths):
            raise ValueError(f"every image file in {root!r} is corrupt")

    # Images of differing sizes keep their own: the pipelines crop (or, for evaluation,
    # resize the short side and centre-crop) each one from the original.
    image_shape = tuple(int(s) for s in shapes[0]) if len(set(shapes)) == 1 else None

    def read(path, label):
        return tf.io.read_file(path), label

    def decode(path, label):
        image = _read_image(path)
        if image_shape is not None:
            image.set_shape(image_shape)
        return image, label

    num_classes = len(class_names)
    return table_source(
        (paths, labels), decode, num_classes, image_shape, class_names, "folder", read=read, holdout=drawn
    )


# --------------------------------------------------------------------------- load_source


def load_source(
    name,
    split="train",
    data_dir=None,
    image_size=32,
    seed=0,
    num_examples=None,
    on_corrupt="error",
    download=False,
    identities=False,
    label_splits=None,
    holdout=None,
):
    """A `Source` for "synthetic", "folder" (with `data_dir`) or any TFDS image dataset.

    Args:
        name: "synthetic" (built in, splits "train" and "test"); "folder": `data_dir` holds
            one sub-folder of .jpg/.jpeg/.png images per class (label = index of the sorted
            sub-folder names) or, unlabelled, the images themselves; a sub-folder named as
            `split` (e.g. data_dir/train) is used when there is one. Anything else is a
            TFDS name (`split` and `data_dir` as `tfds.load`'s); grayscale becomes RGB.
        split: "train", "test", or a TFDS split name.
        data_dir: the image folder (`name="folder"`) or the TFDS data directory.
        image_size: side of the synthetic images (folder images keep their own size; the
            pipelines crop and resize them).
        seed: generation seed of the synthetic set (its test split uses another stream);
            picks the subset when `num_examples` limits a folder.
        num_examples: use only this many examples (default all; synthetic: 5000 train,
            1000 test).
        on_corrupt: folders only: "error" raises naming the files that do not decode,
            "skip" leaves them out with a logged warning.
        download: let TFDS download and prepare a dataset that is not there yet (needs
            network); by default a missing dataset is an error saying how to get it.
        label_splits: folders only: the other splits that share the label space (e.g. the
            eval split when loading train): classes are numbered over the sorted union of the
            class folder names of `split` and these, so a class has the same label in every
            split even when one split lacks it or has it empty (a warning names each empty
            class folder). TFDS datasets keep their own class names.
        identities: give TFDS datasets whose class is a name rather than a class label (LFW
            stores each face's identity as text and lists its supervised keys as (label,
            image)) one class per distinct name, numbered in sorted order of the names.
        holdout: folders only: a `simsiam_tf.data.holdout.HoldoutSpec`. When `data_dir` has no
            sub-folder named `split` and holds class sub-folders, the images are cut into a
            seeded, stratified held-out part and the rest, and the part the spec names is
            loaded (its `Holdout` record is the source's `holdout`). Without it such a folder
            gives all its images to every split. Flat (unlabelled) folders are never cut.

    Returns:
        A `Source`: its `num_examples`, `num_classes`, `image_shape` and the records
        the pipelines of `simsiam_tf.data` read.

    Raises:
        ValueError: an unknown split, a missing or empty folder or TFDS dataset, files
            that do not decode (with `on_corrupt="error"`), each message naming the
            problem and the fix.

    Example:
        ```python
        source = load_source("folder", split="train", data_dir="my_images")
        ```
    """
    if on_corrupt not in ("error", "skip"):
        raise ValueError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
    if num_examples is not None and num_examples < 1:
        raise ValueError(f"num_examples must be positive, got {num_examples}")
    if name == "synthetic":
        return _synthetic_source(split, image_size, seed, num_examples)
    if name == "folder":
        return _folder_source(data_dir, split, image_size, seed, num_examples, on_corrupt, label_splits, holdout)
    return _tfds_source(name, split, data_dir, num_examples, download, identities)


def class_counts(source):
    """Images per class of a labelled source held in memory; None for a streamed one (not counted)."""
    if not (source.labelled and source.random_access):
        return None
    labels = np.asarray(source.records[-1])
    return np.bincount(labels[labels >= 0], minlength=source.num_classes)


def check_label_spaces(train, evaluation, train_split="train", eval_split="test"):
    """Raises ValueError unless `evaluation`'s labels mean the classes `train`'s mean, as evaluation that
    compares predictions with labels (kNN, probes, closed-set verification) needs: the same class names
    (the same count when unnamed), and every class with evaluation images has training images."""
    if train.class_names and evaluation.class_names:
        if tuple(train.class_names) != tuple(evaluation.class_names):
            only_eval = sorted(set(evaluation.class_names) - set(train.class_names))
            only_train = sorted(set(train.class_names) - set(evaluation.class_names))
            raise ValueError(
                f"the label spaces of splits {train_split!r} and {eval_split!r} differ (classes only in "
                f"{eval_split!r}: {', '.join(only_eval) or 'none'}; only in {train_split!r}: "
                f"{', '.join(only_train) or 'none'}; or another order): load both with the same class names"
            )
    elif train.num_classes != evaluation.num_classes:
        raise ValueError(
            f"split {train_split!r} has {train.num_classes} classes and split {eval_split!r} "
            f"{evaluation.num_classes}: the labels of the two cannot be compared"
        )
    train_counts, eval_counts = class_counts(train), class_counts(evaluation)
    if train_counts is None or eval_counts is None:
        return
    unknown = np.flatnonzero((eval_counts > 0) & (train_counts == 0))
    if unknown.size:
        names = [train.class_names[i] if train.class_names else str(i) for i in unknown]
        raise ValueError(
            f"class(es) {', '.join(names)} of split {eval_split!r} have no images in split {train_split!r}, so "
            f"no classifier can learn them: add {train_split!r} images of them, or remove them from {eval_split!r}"
        )
