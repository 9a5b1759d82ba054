"""`Source`: a dataset of `(image uint8 [H, W, 3], label int64)` plus what the pipelines need to know about it.

Every loader (`sources.load_source`: the synthetic sets, image folders; `tfds_source`)
returns one, made by `records_source`.
"""

import dataclasses
from typing import Any, Callable, Optional, Tuple

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
# The formats `tf.io.decode_image` reads (Keras' image_dataset_from_directory takes the same, and WebP).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
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
    skipped: for folders: the `image_files.SkipReport` of the files left out (or none were).
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
    skipped: Any = None

    @property
    def labelled(self):
        return self.num_classes > 0

    @property
    def random_access(self):
        return isinstance(self.records, tuple)


def records_source(records, decode, num_classes, image_shape, class_names, name, num_examples=None, **details):
    """A `Source` whose images are `records` decoded by `decode` (None: the records are `(images, labels)`).

    `records` is a tuple of arrays read into memory (random access; `num_examples` is
    their length) or a `tf.data.Dataset` streamed from files (give `num_examples`).
    `details`: the `Source`'s other fields (read, holdout, skipped, epoch_records).
    """
    if isinstance(records, tf.data.Dataset):
        elements = records
    else:
        records = tuple(tf.convert_to_tensor(r) for r in records)
        elements = tf.data.Dataset.from_tensor_slices(records)
        num_examples = int(records[0].shape[0])
    return Source(
        dataset=elements if decode is None else map_ordered(elements, decode),
        num_examples=num_examples,
        num_classes=num_classes,
        image_shape=image_shape,
        class_names=tuple(class_names),
        name=name,
        records=records,
        decode=decode,
        **details,
    )


def decode_encoded(encoded, label):
    """An encoded image file (PNG, JPEG, GIF, BMP) as uint8 RGB `[H, W, 3]`, with its label as int64."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image, tf.cast(label, tf.int64)
