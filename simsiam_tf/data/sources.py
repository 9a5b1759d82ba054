"""Image sources: the synthetic sets, TFDS datasets and image folders, behind one `Source`.

A `Source` is a dataset of `(image uint8 [H, W, 3], label int64)` plus what the
pipelines (`simsiam_tf.data.pipeline`, `pairs`, `tiles`) need to know about it.
"""

import os

import numpy as np
import tensorflow as tf
from absl import logging

from simsiam_tf import progress
from simsiam_tf.data import holdout as holdout_lib
from simsiam_tf.data import image_files, synthetic
from simsiam_tf.data.source import (  # noqa: F401 (the names sources.X documents)
    AUTOTUNE,
    IMAGE_EXTENSIONS,
    IN_MEMORY_MAX_BYTES,
    Source,
    map_ordered,
    records_source,
)
from simsiam_tf.data.tfds_source import tfds_source

_SYNTHETIC_SETS = {
    synthetic.SYNTHETIC: synthetic.make_synthetic,
    synthetic.SYNTHETIC_SCENES: synthetic.make_synthetic_scenes,
}


def _synthetic_source(name, split, image_size, seed, num_examples):
    if split not in synthetic.SYNTHETIC_SPLITS:
        raise ValueError(f"the {name} dataset has splits {sorted(synthetic.SYNTHETIC_SPLITS)}, got split={split!r}")
    stream, default_size = synthetic.SYNTHETIC_SPLITS[split]
    n = default_size if num_examples is None else num_examples
    split_seed = np.random.SeedSequence([seed, stream])
    images, labels = _SYNTHETIC_SETS[name](n, image_size=image_size, seed=split_seed)
    patterns = synthetic.SYNTHETIC_PATTERNS
    return records_source((images, labels), None, len(patterns), (image_size, image_size, 3), patterns, name)


# --------------------------------------------------------------------------- image folders


def _image_files(folder, recursive):
    """Every entry whose name ends in an image extension, sorted: regular files and also what is not one
    (a directory named like an image is not descended into; a FIFO, a broken link, a link loop), so that
    `image_files.check_files` reports them instead of a read failing or blocking."""
    found = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            found += [os.path.join(root, d) for d in dirs if d.lower().endswith(IMAGE_EXTENSIONS)]
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.lower().endswith(IMAGE_EXTENSIONS))
            found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    else:
        found = [os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _read_image(path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _decode_all(paths, stop_at_first):
    """Decodes every file once, in parallel: (`BadFile`s of those that fail, shapes of the others).
    `stop_at_first`: stop at the first failure (in order), with the decoder's message."""
    scan = tf.data.Dataset.from_tensor_slices((paths, tf.range(len(paths))))
    scan = map_ordered(scan, lambda p, i: (i, tf.shape(_read_image(p))))
    if not stop_at_first:
        scan = scan.ignore_errors()
    good, shapes = [], []
    with progress.Progress(len(paths), "checking image files") as shown:
        try:
            for index, shape in scan.as_numpy_iterator():
                good.append(index)
                shapes.append(tuple(shape))
                shown.update()
        except tf.errors.OpError as err:
            # In order: the element after the last one received is the one that failed.
            detail = f"the decoder says: {err.message.splitlines()[0][:200]}"
            return [image_files.BadFile(str(paths[len(good)]), image_files.DAMAGED, detail)], shapes
    failed = sorted(set(range(len(paths))) - set(good))
    detail = "the decoder fails on it"
    return [image_files.BadFile(str(paths[i]), image_files.DAMAGED, detail) for i in failed], shapes


def _check_files(paths, root, on_corrupt, max_pixels):
    """(mask of the usable `paths`, their shapes, the `SkipReport`). Headers are checked before anything
    decodes (bombs, FIFOs, ...), then every file left is decoded once. on_corrupt="error" raises at the
    first bad file, naming it, the reason and the fix."""
    stop = on_corrupt == "error"
    bad = image_files.check_files(paths, max_pixels, stop_at_first=stop)
    if not (bad and stop):
        named = {b.path for b in bad}
        keep = np.asarray([str(p) not in named for p in paths], bool)
        failed, shapes = _decode_all(paths[keep], stop)
        bad = bad + failed
    if bad and stop:
        raise ValueError(
            f"image file {bad[0].message()}. Or pass --on_corrupt=skip (Python: on_corrupt='skip') to leave out "
            f"every file that cannot be used, with a count by reason (data_dir {root!r})"
        )
    report = image_files.SkipReport(len(paths), tuple(sorted(bad, key=lambda b: b.path)), max_pixels)
    if bad:
        for b in report.bad[:_LOGGED_FILES]:
            logging.warning("skipping image file %s", b.message())
        more = len(bad) - _LOGGED_FILES
        logging.warning(
            "%s: %s%s", root, report.summary(), f" ({more} more than the files named above)" if more > 0 else ""
        )
    named = {b.path for b in bad}
    return np.asarray([str(p) not in named for p in paths], bool), shapes, report


# With on_corrupt="skip", this many skipped files are named one per line, the rest only counted.
_LOGGED_FILES = 20


def _split_root(data_dir, split):
    """data_dir/split when there is such a folder, else data_dir itself."""
    return os.path.join(data_dir, split) if split and os.path.isdir(os.path.join(data_dir, split)) else data_dir


def _class_dirs(root):
    """The class sub-folders of `root`: not hidden, not named like an image (`_image_files` lists those as bad
    entries), and not a link back to `root` or above it (a loop, which would list the folder again)."""
    names = []
    for d in sorted(os.listdir(root)):
        path = os.path.join(root, d)
        if d.startswith(".") or d.lower().endswith(IMAGE_EXTENSIONS) or not os.path.isdir(path):
            continue
        target, here = os.path.realpath(path), os.path.realpath(root)
        if os.path.islink(path) and (here + os.sep).startswith(target.rstrip(os.sep) + os.sep):
            logging.warning("%s links back to %s: not read as a class folder (it would loop)", path, target)
            continue
        names.append(d)
    return names


def folder_class_names(data_dir, splits):
    """The label space of a folder dataset: the sorted union of the class folder names of `splits`
    (each data_dir/<split>, or data_dir itself), empty folders included, so that a class has one label
    in every split."""
    names = set()
    for root in {_split_root(data_dir, split) for split in splits}:
        names.update(_class_dirs(root))
    return tuple(sorted(names))


def _folder_source(
    data_dir,
    split,
    image_size,
    seed,
    num_examples,
    on_corrupt,
    label_splits=None,
    holdout=None,
    max_pixels=image_files.DEFAULT_MAX_IMAGE_PIXELS,
):
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

    keep, shapes, report = _check_files(paths, root, on_corrupt, max_pixels)
    paths, labels = paths[keep], labels[keep]
    if not len(paths):
        raise ValueError(f"no image file in {root!r} can be used ({report.summary()})")

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
    return records_source(
        (paths, labels),
        decode,
        num_classes,
        image_shape,
        class_names,
        "folder",
        read=read,
        holdout=drawn,
        skipped=report,
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
    max_image_pixels=image_files.DEFAULT_MAX_IMAGE_PIXELS,
):
    """A `Source` for "synthetic", "synthetic_scenes", "folder" (with `data_dir`) or any TFDS image dataset.

    Args:
        name: "synthetic" (built in, splits "train" and "test": `make_synthetic`'s patterns
            filling their images), "synthetic_scenes" (built in, the same splits:
            `make_synthetic_scenes`, the patterns on objects in clutter, the demo's set); "folder": `data_dir` holds
            one sub-folder of images (.jpg, .jpeg, .png, .gif, .bmp, .webp) per class (label =
            index of the sorted sub-folder names) or, unlabelled, the images themselves; a sub-folder named as
            `split` (e.g. data_dir/train) is used when there is one. Anything else is a
            TFDS name (`split` and `data_dir` as `tfds.load`'s); grayscale becomes RGB.
        split: "train", "test", or a TFDS split name.
        data_dir: the image folder (`name="folder"`) or the TFDS data directory.
        image_size: side of the synthetic images (folder images keep their own size; the
            pipelines crop and resize them).
        seed: generation seed of the synthetic sets (their test split uses another stream);
            picks the subset when `num_examples` limits a folder.
        num_examples: use only this many examples (default all; synthetic: 5000 train,
            1000 test).
        on_corrupt: folders only: what to do with an entry named like an image that cannot
            be used (`simsiam_tf.data.image_files`: not a regular file, empty, not an image,
            over `max_image_pixels`, truncated or damaged). "error" raises at the first,
            naming it, the reason and the fix; "skip" leaves them all out and logs a warning
            per file (the first 20) and a count by reason (the source's `skipped` report).
            Valid but unusual images are decoded to RGB, not skipped: CMYK and grayscale
            JPEGs, 16-bit PNGs (to 8 bits), palette, grayscale-with-alpha and RGBA images
            (alpha dropped), animated GIFs (the first frame), EXIF-rotated JPEGs (the pixels
            as stored: the rotation is not applied, as TensorFlow's decoders and Keras'
            `image_dataset_from_directory` do).
        max_image_pixels: folders only: an image whose header declares more pixels (width x
            height) is refused before anything decodes it (a decompression bomb).
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
        ValueError: an unknown split, a missing or empty folder or TFDS dataset, a file
            that cannot be used (with `on_corrupt="error"`), each message naming the
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
    if name in _SYNTHETIC_SETS:
        return _synthetic_source(name, split, image_size, seed, num_examples)
    if name == "folder":
        return _folder_source(
            data_dir, split, image_size, seed, num_examples, on_corrupt, label_splits, holdout, max_image_pixels
        )
    return tfds_source(name, split, data_dir, num_examples, download, identities)


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
