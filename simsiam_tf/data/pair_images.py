"""The images of pair verification: a labelled source as a table of images read one at a time.

`image_table` gives random access to a source's images (in memory or on disk) with
their labels; `prepare_image` resizes (and, for training, crops and flips) one image to
the model's size, so that a source whose images differ in size gives equal batches;
`make_image_dataset`/`load_images` read a fixed list of them for evaluation;
`load_labelled_source` reads TFDS datasets whose class is a name (LFW) as classes.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from simsiam_tf import augment as augment_lib
from simsiam_tf.config import VERIFY_AUGMENTS, check_choice
from simsiam_tf.data import sources

AUTOTUNE = tf.data.AUTOTUNE
AUGMENTS = VERIFY_AUGMENTS
# Random-resized-crop area range of training pairs: mild, since both images of a pair
# must keep enough of the object to be compared.
TRAIN_CROP_SCALE = (0.5, 1.0)


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


def load_labelled_source(name, **kwargs):
    """`sources.load_source(name, **kwargs)`, with TFDS datasets whose class is a name (LFW's identities) read as classes."""
    return sources.load_source(name, identities=True, **kwargs)
